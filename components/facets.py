"""Facets Overview as one self-contained HTML page: TFDV's statistics view, with nothing fetched when it opens.

TFDV's own `get_statistics_html` loads the Facets web components from cdnjs and GitHub when the
page opens, which fails in the KFP UI's sandboxed iframe on an air-gapped cluster and in any
browser offline. Facets' compiled Polymer bundle is not published on PyPI or npm on its own, but
the What-If Tool's notebook widget (`witwidget`, Apache-2.0, on PyPI) ships it inside its
`wit_jupyter.html`: `install_bundle` takes that one file out of the wheel when a `tfdv`
environment or image is built (sha256-verified, like the sample data), drops the widget's
dashboard instance, and `overview_page` inlines it with the statistics proto.

Polymer 2 registers its elements with `customElements.define`, which every current browser has
natively, so the inlined bundle needs no HTML-imports polyfill. Checked by opening the page in
headless Chromium with the network off (README, "Data validation").
"""

import base64
import hashlib
import html
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from slipway.atomic import atomic_output

log = logging.getLogger(__name__)

FACETS_WHEEL = "witwidget==1.8.1"
BUNDLE_MEMBER = "witwidget/static/wit_jupyter.html"
BUNDLE_SHA256 = "5a4f1580c036c55032d70002b075e78735b46b8fbc3f193e07d3841e58e60493"
# The widget's own dashboard, instantiated at the end of the bundle: the page shows Facets alone.
DASHBOARD_INSTANCE = '<wit-dashboard local id="wit" style="display:block">\n</wit-dashboard>'


class FacetsBundleError(RuntimeError):
    """The Facets bundle is missing from this environment, or the download does not match its digest."""


def bundle_path(prefix: str = sys.prefix) -> Path:
    """Where an environment (or image) keeps the bundle: `<prefix>/share/slipway/facets-overview.html`."""
    return Path(prefix) / "share" / "slipway" / "facets-overview.html"


def install_bundle(prefix: str = sys.prefix) -> Path:
    """Downloads the witwidget wheel from PyPI (no dependencies) and installs its Facets bundle; once."""
    destination = bundle_path(prefix)
    if destination.is_file():
        return destination
    with tempfile.TemporaryDirectory(prefix="slipway-facets-") as tmp:
        log.info("downloading %s from PyPI (no dependencies) for the Facets Overview bundle", FACETS_WHEEL)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", tmp, FACETS_WHEEL], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("witwidget-*.whl"))
        if result.returncode != 0 or not wheels:
            raise FacetsBundleError(f"pip download {FACETS_WHEEL} failed: {result.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            content = wheel.read(BUNDLE_MEMBER)
    digest = hashlib.sha256(content).hexdigest()
    if digest != BUNDLE_SHA256:
        raise FacetsBundleError(f"{BUNDLE_MEMBER} in {FACETS_WHEEL} has sha256 {digest}, expected {BUNDLE_SHA256}")
    bundle = content.decode("utf-8")
    if DASHBOARD_INSTANCE not in bundle:
        raise FacetsBundleError(f"{BUNDLE_MEMBER} no longer ends with the dashboard instance this module removes")
    with atomic_output(destination) as temp:
        temp.write_text(bundle.replace(DASHBOARD_INSTANCE, ""), encoding="utf-8")
    log.info("installed the Facets Overview bundle at %s", destination)
    return destination


def overview_page(statistics: bytes, title: str, bundle: Path | None = None) -> str:
    """A complete HTML page showing a serialized DatasetFeatureStatisticsList (one dataset per split) in Facets."""
    bundle = bundle or bundle_path()
    if not bundle.is_file():
        raise FacetsBundleError(f"the Facets Overview bundle is missing ({bundle}): rebuild the tfdv environment "
                                f"(`make tfdv-env`), which installs it with `python -m slipway.components.facets`")
    proto = base64.b64encode(statistics).decode("ascii")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body style=\"margin:0\">\n"
        f"{bundle.read_text(encoding='utf-8')}\n"
        "<facets-overview id=\"overview\"></facets-overview>\n"
        f"<script>document.getElementById(\"overview\").protoInput = \"{proto}\";</script>\n"
        "</body></html>\n"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(install_bundle())
