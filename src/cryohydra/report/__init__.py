"""The run report (``OUTDIR/report.html``) and its figures; see :mod:`cryohydra.report.build`."""

from cryohydra.report.build import write_report

__all__ = ["write_report"]
