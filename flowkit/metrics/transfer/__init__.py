"""Expression-transfer benchmark: every held-out face to every other expression of its subject,
each method scored against the same person's real faces by judges that never saw the flow, and
compared pairwise with the one-line baselines (docs/tutorials/expression-transfer.md)."""

from flowkit.metrics.transfer.benchmark import run_transfer_benchmark, score_methods
from flowkit.metrics.transfer.methods import TransferMethod, baseline_methods, flow_methods
from flowkit.metrics.transfer.report import TransferReport
from flowkit.metrics.transfer.scores import SCORES, Judges, score_edits
from flowkit.metrics.transfer.tasks import TransferTasks, transfer_tasks

__all__ = [
    "SCORES",
    "Judges",
    "TransferMethod",
    "TransferReport",
    "TransferTasks",
    "baseline_methods",
    "flow_methods",
    "run_transfer_benchmark",
    "score_edits",
    "score_methods",
    "transfer_tasks",
]
