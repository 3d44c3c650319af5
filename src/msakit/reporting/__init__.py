"""Tables and plots of finished runs."""

from msakit.evaluation.tables import format_results, print_results

__all__ = ["format_results", "print_results"]
