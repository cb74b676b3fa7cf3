"""The run report (``OUTDIR/report.html``) and its figures; see :mod:`cryohydra.report.build`."""

from cryohydra.report.build import REPORT_FILE, RunFolder, write_report

__all__ = ["REPORT_FILE", "RunFolder", "write_report"]
