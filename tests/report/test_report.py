"""The run report: made at the end of a run and during one, and checked in a real browser."""

import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from cryohydra.cli.main import main as cli
from cryohydra.inference.train import AbInitio
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.report import write_report

FIGURES = ("Map", "FSC", "Training", "Viewing directions", "Encoder heads", "Pose error")


def _embedded_figures(page: str) -> dict[str, np.ndarray]:
    """``alt -> decoded PNG`` of every image embedded in a page."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', page)
    return {alt: imread(io.BytesIO(base64.b64decode(data)), format="png") for data, alt in found}


def test_finished_run_has_a_self_contained_report(finished):
    page = (finished / "report.html").read_text()
    figures = _embedded_figures(page)
    assert set(FIGURES) <= set(figures)
    for name, image in figures.items():
        assert image.shape[0] > 100 and image.shape[1] > 100, name
        assert float(image[..., :3].std()) > 0.01, f"{name} is blank"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "finished" in page and "switch to auto-decoding after epoch" in page
    # Every finished run scores point groups on its map and says which it shows.
    detection = json.loads((finished / "summary.json").read_text())["symmetry_detection"]
    assert detection["symbol"] and len(detection["scores"]) == 17
    assert "point group of the map" in page and f"{detection['symbol']} (" in page
    for name in ("report_map.png", "report_fsc.png", "report_training.png"):
        assert (finished / name).stat().st_size > 1000


def test_the_report_leads_with_the_convergence_warnings(finished, tmp_path):
    summary = json.loads((finished / "summary.json").read_text())
    assert isinstance(summary["warnings"], list)  # every finished job checks itself
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    warning = {
        "code": "search_not_settled",
        "message": "the search <did not> settle.",
        "advice": "x",
    }
    for warnings, shown, hidden in (
        ([warning], 'class="warning"', 'class="ok"'),
        ([], 'class="ok"', 'class="warning"'),
    ):
        summary["warnings"] = warnings
        (copy / "summary.json").write_text(json.dumps(summary))
        page = write_report(copy).read_text()
        assert shown in page and hidden not in page
        assert page.index(shown) < page.index("<h2>Summary</h2>")
    summary["warnings"] = [warning]
    (copy / "summary.json").write_text(json.dumps(summary))
    assert "the search &lt;did not&gt; settle." in write_report(copy).read_text()


def test_report_of_a_running_job_and_the_command(dataset, tiny_config, tmp_path, monkeypatch):
    """Interrupted after two epochs: the report comes from the log, the latest per-epoch poses
    and the checkpoint's volume; ``cryohydra report`` rewrites it."""
    original = AbInitio.run_epoch
    calls = {"n": 0}

    def interrupted(self, bar):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, bar)

    monkeypatch.setattr(AbInitio, "run_epoch", interrupted)
    out = tmp_path / "running"
    with pytest.raises(KeyboardInterrupt):
        run_job(read_star(dataset / "particles.star"), tiny_config, JobOptions(out, progress=False))
    monkeypatch.undo()
    assert not (out / "report.html").exists()
    assert cli(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "running: 2 of 3 epochs" in page
    assert "model volume after epoch 2" in page and "poses after epoch 2" in page
    assert {"Map", "Training", "Viewing directions", "Pose error"} <= set(_embedded_figures(page))
    # An analysis figure in the folder joins the report.
    shutil.copy(out / "report_map.png", out / "analysis_example.png")
    write_report(out)
    assert "Analysis: example" in (out / "report.html").read_text()


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert cli(["report", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------------
# In a real browser (Chromium from the system packages)
# ---------------------------------------------------------------------------------------------

_PROBE = """<script>
window.addEventListener("load", () => {
  const out = [...document.images].map((img) => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    let range = 0;
    if (img.naturalWidth > 0) {
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const d = context.getImageData(0, 0, canvas.width, canvas.height).data;
      let lo = 255, hi = 0;
      for (let k = 0; k < d.length; k += 4) { lo = Math.min(lo, d[k]); hi = Math.max(hi, d[k]); }
      range = hi - lo;
    }
    return [img.alt, img.naturalWidth, img.naturalHeight, range];
  });
  console.log("PROBE " + JSON.stringify(out));
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):  # .ci/run installs it: in CI its absence is a failure
        pytest.fail("Chromium is not installed (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def load_in_browser(page_path) -> tuple[list, list[str]]:
    """Open a copy of the page with a probe script in headless Chromium; returns the probe's
    ``[alt, width, height, red range]`` per image and every other console message."""
    probed = page_path.with_name("probed_" + page_path.name)
    probed.write_text(page_path.read_text().replace("</body>", _PROBE + "</body>"))
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    messages = re.findall(r':CONSOLE[^\]]*\] "(.*)", source:', result.stderr)
    probes = [m for m in messages if m.startswith("PROBE ")]
    assert len(probes) == 1, result.stderr[-2000:]
    return json.loads(probes[0].removeprefix("PROBE ")), [m for m in messages if m not in probes]


def test_report_loads_in_chromium_without_errors_and_every_figure_is_drawn(finished):
    images, console = load_in_browser(finished / "report.html")
    assert console == []
    assert {alt for alt, *_ in images} >= set(FIGURES)
    for alt, width, height, value_range in images:
        assert width > 100 and height > 100 and value_range > 10, alt


def test_the_browser_check_catches_errors_and_broken_figures(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="broken">'
        "<script>missing();</script></body></html>"
    )
    images, console = load_in_browser(page)
    assert images == [["broken", 0, 0, 0]]
    assert any("missing is not defined" in message for message in console)
