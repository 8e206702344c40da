"""Make the site `asv publish` writes open with no network: its page loads jQuery, flot,
bootstrap and three small plugins from CDNs, and without them shows only asv's error page.

    asv publish && python tools/asv_offline.py [--html .asv/html]
    asv preview            # or: python -m http.server -d .asv/html 8080

Copies the vendored files (tools/asv_vendor/, MIT-licensed, sources in its LICENSES.md) to
HTML/vendor/ and points every <script>/<link> of the site's pages at them.  The page still
reads its data with XMLHttpRequest, which browsers refuse on file:// URLs: serve the folder
on localhost as above.  Fails, changing nothing, on a CDN address it has no copy of (a newer
asv asking for other files) or on a vendored file whose bytes are not the ones listed here.
Running it twice is harmless.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().with_name("asv_vendor")

# The last part of each CDN address in asv 0.6's index.html -> (our copy, its SHA-256).
# The copies of jQuery, blueimp-md5, bootstrap and orderBars are the very files asv pins:
# their hashes match the integrity attributes of asv's page.
LOCAL = {
    "jquery-3.3.1.min.js": (
        "jquery-3.3.1.min.js",
        "160a426ff2894252cd7cebbdd6d6b7da8fcd319c65b70468f10b6690c45d02ef"),
    "jquery.flot.min.js": (
        "jquery.flot-0.8.3.js",
        "b7b931f273c38b1277b9c6c1f4e05c4ec09885a487bddaf3279e2d7e49a38e12"),
    "jquery.flot.time.min.js": (
        "jquery.flot.time-0.8.3.js",
        "a582c832adc7138a6b05aaf61f16ebac274701f1be4afea77e739a1c34b9c41a"),
    "jquery.flot.selection.min.js": (
        "jquery.flot.selection-0.8.3.js",
        "e6c85f6c1ebe4b4da29d8ae238c7c5060283f05f7ef054f6b91817d02c092918"),
    "jquery.flot.categories.min.js": (
        "jquery.flot.categories-0.8.3.js",
        "6e81664b28ea795c734906f4aa15614640a75ac7fbd399a7fb9084040698351a"),
    "jquery.flot.orderBars.js": (
        "jquery.flot.orderBars-1.0.0.js",
        "39735b4f46f96ff4e082572401f47c55a2767b366fd1d1e821e44a8d830a12bf"),
    "stupidtable.min.js": (
        "stupidtable-1.1.3.min.js",
        "4642380f28ebe9ed7cac251793b281ef8620c4386205d92788f9b12f5cceb4e0"),
    "md5.min.js": (
        "md5-2.19.0.min.js",
        "64d7ded388c562e4bde9e58ce205e5fa01b9734fcd434d496eb7b4fbfe9b927d"),
    "bootstrap.min.js": (
        "bootstrap-3.1.1.min.js",
        "898d05a17f2cfc5120ddcdba47a885c378c0b466f30f0700e502757e24b403a1"),
    "bootstrap.min.css": (
        "css/bootstrap-3.1.1.min.css",
        "e9503448692b738dd260fbd7f7cabf2e11f09b600fa97e6eb3a56eba5b1a7e9b"),
}

# An opening <script ... src="http..."> or <link ... href="http...">.
REMOTE_TAG = re.compile(r'<(script|link)\b[^>]*?\b(?:src|href)\s*=\s*"(https?://[^"]+)"[^>]*>',
                        re.IGNORECASE | re.DOTALL)


def check_vendor(vendor=VENDOR):
    """Raise ValueError unless every vendored file is present with the listed bytes."""
    for copy, digest in LOCAL.values():
        path = vendor / copy
        if not path.is_file():
            raise ValueError(f"vendored file missing: {path}")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != digest:
            raise ValueError(f"{path} has SHA-256 {got}, expected {digest}")


def localize(html):
    """(html with every remote script/stylesheet pointed at vendor/, [addresses replaced]).

    Raises ValueError naming any remote address that has no vendored copy."""
    replaced, unknown = [], []

    def local_tag(match):
        kind, url = match.group(1).lower(), match.group(2)
        name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if name not in LOCAL:
            unknown.append(url)
            return match.group(0)
        replaced.append(url)
        src = "vendor/" + LOCAL[name][0]
        if kind == "link":
            return f'<link rel="stylesheet" href="{src}">'
        return (f'<script language="javascript" type="text/javascript" src="{src}" '
                f'onerror="js_load_failure()">')

    out = REMOTE_TAG.sub(local_tag, html)
    if unknown:
        raise ValueError("no vendored copy of " + ", ".join(unknown)
                         + " (asv's page changed: add the files to tools/asv_vendor/)")
    return out, replaced


def _write_atomically(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def make_offline(html_dir):
    """Copy the vendored files into html_dir/vendor and rewrite its pages; returns
    {page name: number of addresses replaced}."""
    html_dir = Path(html_dir)
    pages = sorted(html_dir.glob("*.html"))
    if not (html_dir / "index.html").is_file():
        raise ValueError(f"no index.html in {html_dir}: run 'asv publish' first")
    check_vendor()
    new = {p: localize(p.read_text(encoding="utf-8")) for p in pages}   # all checked first
    shutil.copytree(VENDOR, html_dir / "vendor", dirs_exist_ok=True)
    for page, (text, _) in new.items():
        _write_atomically(page, text)
    return {p.name: len(r) for p, (_, r) in new.items()}


def _default_html_dir():
    try:
        with open("asv.conf.json") as f:
            conf = json.loads("\n".join(line for line in f
                                        if not line.lstrip().startswith("//")))
        return conf.get("html_dir", "html")
    except (OSError, ValueError):
        return ".asv/html"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--html", default=None,
                   help="the folder asv publish wrote (default: asv.conf.json's html_dir)")
    args = p.parse_args(argv)
    html_dir = args.html or _default_html_dir()
    try:
        counts = make_offline(html_dir)
    except ValueError as e:
        print(f"asv_offline: {e}", file=sys.stderr)
        return 1
    for name, n in counts.items():
        print(f"{html_dir}/{name}: {n} CDN addresses now local")
    print(f"serve it with 'asv preview' or 'python -m http.server -d {html_dir} 8080'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
