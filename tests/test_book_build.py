"""The built book (_build/html) in a real headless browser, and lslu.book's profile logic.

`make test` builds the smoke book before pytest runs; run on its own, this module builds it
(`python -m lslu.book execute --profile smoke` then `jupyter-book build . -W -n --all`) when pages are
missing. Chromium is required: without it these tests fail, they never skip.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml


from lslu import book as lbook

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _toc_files() -> list[str]:
    return lbook.toc_files(ROOT)


CHAPTERS = _toc_files()
NOTEBOOK_CHAPTERS = [c for c in CHAPTERS if c.startswith("book/executed/")]
_MATH = re.compile(r"\$\$|\{math\}|(?<![\\$])\$[^$\s][^$\n]*\$")


def _source_of(chapter: str) -> tuple[str, list[str]]:
    """(kind, markdown texts) of a chapter's source; notebook chapters read notebooks/<stem>."""
    if chapter.startswith("book/executed/"):
        for path in (ROOT / "notebooks" / f"{Path(chapter).name}.ipynb", ROOT / f"{chapter}.ipynb"):
            if path.exists():
                nb = nbformat.read(path, as_version=4)
                return "notebook", [c.source for c in nb.cells if c.cell_type == "markdown"]
        return "notebook", []  # reported by the tests below (and by test_packaging)
    path = ROOT / f"{chapter}.md"
    return "markdown", [path.read_text(encoding="utf-8")] if path.exists() else []


def _title_of(chapter: str) -> str:
    for text in _source_of(chapter)[1]:
        for line in text.splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                return re.sub(r"[*_`]", "", title)  # the page shows emphasis/code as text
    raise AssertionError(f"{chapter} has no `# ` title")


MATH_CHAPTERS = [c for c in CHAPTERS if any(_MATH.search(t) for t in _source_of(c)[1])]


def _chromium() -> str:
    exe = os.environ.get("LSLU_CHROMIUM")
    if exe:
        return exe
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium found (tried LSLU_CHROMIUM, " + ", ".join(BROWSERS) + "). Install it "
                "(Debian: apt-get install chromium; `make test` does this when run as root).")


def _run(cmd, env):
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def built_book() -> Path:
    """_build/html with every chapter of _toc.yml; built (smoke profile) if anything is missing."""
    wanted = [HTML / "index.html"] + [HTML / f"{c}.html" for c in CHAPTERS]
    if not all(p.exists() for p in wanted):
        env = dict(os.environ)
        env.setdefault("LSLU_RESULTS_DIR", str(ROOT / "_build" / "test-results"))
        _run([sys.executable, "-m", "lslu.book", "execute", "--profile", "smoke"], env)
        jb = Path(sys.executable).parent / "jupyter-book"
        _run([str(jb) if jb.exists() else "jupyter-book", "build", ".", "-W", "-n", "--all"], env)
    missing = [str(p.relative_to(ROOT)) for p in wanted if not p.exists()]
    assert not missing, f"the book build did not produce {missing}"
    return HTML


@pytest.fixture(scope="session")
def dom(built_book, tmp_path_factory):
    """chapter -> the DOM Chromium has after running the page's scripts (5 s virtual time)."""
    exe = _chromium()
    cache: dict[str, str] = {}

    def get(chapter: str) -> str:
        if chapter not in cache:
            profile_dir = tmp_path_factory.mktemp("chromium")
            cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-background-networking", "--disable-component-update",
                   "--no-first-run", "--disable-sync", f"--user-data-dir={profile_dir}",
                   "--virtual-time-budget=5000", "--dump-dom",
                   (built_book / f"{chapter}.html").as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0 and "<html" in proc.stdout, \
                f"chromium failed on {chapter}: {proc.stderr[-2000:]}"
            cache[chapter] = proc.stdout
        return cache[chapter]

    return get


# ------------------------------------------------------------------------------- pages
def test_toc_has_the_expected_parts():
    assert CHAPTERS[0] == "book/intro"
    for c in ("book/method", "book/reproducing", "book/reference_code"):
        assert c in CHAPTERS
    assert "book/executed/01_lslu_function" in NOTEBOOK_CHAPTERS
    assert "book/method" in MATH_CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_page_has_its_title(dom, chapter):
    page = dom(chapter)
    m = re.search(r"<title>(.*?)</title>", page, re.S)
    assert m, f"{chapter}: no <title>"
    # Sphinx typesets straight quotes as curly ones
    title = html.unescape(m.group(1)).replace("\u2019", "'").replace("\u2018", "'")
    assert _title_of(chapter).replace("\u2019", "'") in title, f"{chapter}: title {title!r}"
    assert "LSLU companion" in title


@pytest.mark.parametrize("chapter", MATH_CHAPTERS or ["book/method"])  # never empty/skipped
def test_math_is_typeset_offline(dom, chapter):
    page = dom(chapter)
    assert "mjx-container" in page, f"{chapter}: MathJax did not typeset (raw TeX left)"
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()


@pytest.mark.parametrize("chapter", NOTEBOOK_CHAPTERS or ["book/executed/01_lslu_function"])
def test_notebook_chapter_has_a_figure(dom, chapter):
    page = dom(chapter)
    imgs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", page)
    pngs = [s for s in imgs if s.startswith("data:image/png") or s.split("?")[0].endswith(".png")]
    assert pngs, f"{chapter}: no PNG figure (MPLBACKEND=Agg without %matplotlib inline?)"
    for src in pngs:
        if not src.startswith("data:"):
            target = (HTML / chapter).parent / src
            assert target.resolve().exists(), f"{chapter}: figure {src} missing"
    # the profile note lslu.book adds to every executed copy
    assert "Profile" in page and "Executed in" in page


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_network_resources(dom, chapter):
    raw = (HTML / f"{chapter}.html").read_text(encoding="utf-8")
    for text in (raw, dom(chapter)):
        scripts = re.findall(r"<script\b[^>]*\bsrc=\"(https?:)?//[^\"]*\"", text)
        styles = re.findall(r"<link\b[^>]*\bhref=\"(?:https?:)?//[^\"]*\.css[^\"]*\"", text)
        assert not scripts and not styles, f"{chapter} loads resources from the network"


# What the reader sees, measured by the page itself once loaded (1280 px wide, like a laptop):
# stderr boxes (progress bars, warnings), images shown below 0.6 of their natural size (their
# labels become unreadable) and outputs or tables wider than the text column (clipped or
# scrolled sideways). The script writes its findings into the DOM that --dump-dom returns.
_MEASURE_JS = """
<script>
window.addEventListener("load", () => {
  const found = {stderr: [], small: [], wide: []};
  for (const el of document.querySelectorAll("div.output.stderr, div.stderr")) {
    found.stderr.push((el.textContent || "").trim().slice(0, 80));
  }
  const article = document.querySelector("article") || document.body;
  for (const img of article.querySelectorAll("img")) {
    const shown = img.getBoundingClientRect().width;
    if (!img.naturalWidth || !shown) continue;  // not loaded (another test says so) or hidden
    const scale = shown / img.naturalWidth;
    if (scale < 0.6) found.small.push([img.getAttribute("src").slice(0, 60), +scale.toFixed(2)]);
  }
  const right = article.getBoundingClientRect().right;
  for (const el of article.querySelectorAll("div.cell_output pre, div.cell_output table, table")) {
    const box = el.getBoundingClientRect();
    if (!box.width) continue;
    const over = Math.max(el.scrollWidth - el.clientWidth, box.right - right,
                          el.tagName === "TABLE" && el.parentElement
                            ? box.width - el.parentElement.clientWidth : 0);
    if (over > 1) found.wide.push([el.tagName.toLowerCase(),
                                   (el.textContent || "").trim().slice(0, 50), Math.round(over)]);
  }
  document.body.setAttribute("data-lslu-layout", JSON.stringify(found));
});
</script>
"""


def _layout(exe: str, page: Path, work: Path) -> dict:
    """{"stderr": [...], "small": [[src, scale]], "wide": [[tag, text, px]]} of ``page`` in Chromium.

    The page is copied with the measuring script (and a <base> so its relative links still
    resolve); the built book itself is left untouched."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<head>", f'<head><base href="{page.resolve().as_uri()}">', text, count=1)
    text = text.replace("</body>", _MEASURE_JS + "</body>", 1)
    copy = work / page.name
    copy.write_text(text, encoding="utf-8")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           "--disable-sync", f"--user-data-dir={work / 'profile'}", "--window-size=1280,1000",
           "--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom",
           copy.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'data-lslu-layout="([^"]*)"', proc.stdout)
    assert proc.returncode == 0 and found, f"chromium could not measure {page}: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="session")
def layout(built_book, tmp_path_factory):
    """chapter -> _layout of its built page (cached: three tests read each page)."""
    exe = _chromium()
    cache: dict[str, dict] = {}

    def get(chapter: str) -> dict:
        if chapter not in cache:
            cache[chapter] = _layout(exe, built_book / f"{chapter}.html",
                                     tmp_path_factory.mktemp("layout"))
        return cache[chapter]

    return get


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_stderr_output_boxes(layout, chapter):
    boxes = layout(chapter)["stderr"]
    assert not boxes, (f"{chapter}: {len(boxes)} stderr box(es), e.g. {boxes[:3]} (progress bars "
                       f"belong to the terminal: lslu.train.show_progress)")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_images_are_shown_at_least_at_0_6_of_their_size(layout, chapter):
    small = layout(chapter)["small"]
    assert not small, f"{chapter}: images shrunk below 0.6 (split or stack the panels): {small}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_outputs_and_tables_fit_the_text_column(layout, chapter):
    wide = layout(chapter)["wide"]
    assert not wide, f"{chapter}: outputs/tables wider than the column [tag, text, px]: {wide}"


def test_layout_measure_finds_what_it_should(tmp_path):
    """The measuring script itself, on a page built to have one of each problem (and one fine
    output of each kind): it must report exactly the bad ones."""
    from PIL import Image
    Image.new("RGB", (2000, 200), "white").save(tmp_path / "big.png")
    Image.new("RGB", (300, 100), "white").save(tmp_path / "ok.png")
    page = tmp_path / "page.html"
    page.write_text(
        '<html><head><style>article{width:700px} div.cell_output pre{overflow:auto}</style>'
        '</head><body><article>'
        '<div class="cell_output"><div class="output stderr"><pre>45%|####</pre></div>'
        '<div class="output stream"><pre>short line</pre></div>'
        f'<div class="output stream"><pre>{"x" * 300}</pre></div></div>'
        '<img src="big.png" style="max-width:100%"><img src="ok.png">'
        '<div class="cell_output"><div style="overflow:auto"><table><tr>'
        + "<td>96.7&nbsp;±&nbsp;0.4</td>" * 40 + '</tr></table></div></div>'
        '<table><tr><td>fits</td></tr></table>'
        '</article></body></html>', encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    found = _layout(_chromium(), page, work)
    assert found["stderr"] == ["45%|####"]
    assert [s[0] for s in found["small"]] == ["big.png"] and found["small"][0][1] == 0.35
    assert sorted(w[0] for w in found["wide"]) == ["pre", "table"], found["wide"]


def test_run_log_records_every_notebook(built_book):
    log = json.loads((ROOT / "book" / "executed" / "run_log.json").read_text(encoding="utf-8"))
    assert log["profile"] in lbook.available_profiles()
    for chapter in NOTEBOOK_CHAPTERS:
        entry = log["notebooks"][Path(chapter).name]
        assert entry["status"] == "ok" and entry["seconds"] >= 0
    assert "cpu_count" in log["hardware"] and "torch" in log["hardware"]
    assert "node" not in log["hardware"] and "hostname" not in json.dumps(log).lower()


# ---------------------------------------------------------------- lslu.book (unit tests)
def _notebook(path: Path, parameters: str, body: str = "print('ok')") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A test notebook"),
                nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def profiles_dir(tmp_path):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "small.yaml").write_text(yaml.safe_dump({
        "description": "small test profile",
        "defaults": {"profile": "small", "dataset": "digits", "epochs": 2, "seed": 0},
        "notebooks": {"02_nb": {"epochs": 7}},
    }))
    (d / "other.yaml").write_text("description: other\ndefaults: {}\nnotebooks: {}\n")
    return d


def test_unknown_profile_lists_the_valid_ones(profiles_dir):
    with pytest.raises(ValueError, match=r"unknown profile 'nope'.*other, small"):
        lbook.load_profile("nope", profiles_dir)
    with pytest.raises(ValueError, match="smoke"):
        lbook.load_profile("no-such-profile")  # the repository's own profiles are listed


def test_only_declared_parameters_are_passed(profiles_dir, tmp_path):
    prof = lbook.load_profile("small", profiles_dir)
    nb = _notebook(tmp_path / "01_nb.ipynb", "epochs = 1\nseed = 3")
    assert lbook.notebook_parameters(prof, nb) == {"epochs": 2, "seed": 0}
    bare = _notebook(tmp_path / "03_nb.ipynb", "")
    assert lbook.notebook_parameters(prof, bare) == {}


def test_overrides_win_and_profile_is_always_passed(profiles_dir, tmp_path):
    prof = lbook.load_profile("small", profiles_dir)
    nb = _notebook(tmp_path / "02_nb.ipynb", "profile = 'smoke'\nepochs = 1\ndataset = 'cifar10'")
    assert lbook.notebook_parameters(prof, nb) == {"profile": "small", "epochs": 7,
                                                   "dataset": "digits"}
    other = lbook.load_profile("other", profiles_dir)  # no defaults at all: profile still passed
    assert lbook.notebook_parameters(other, nb) == {"profile": "other"}


def test_override_of_an_undeclared_parameter_is_an_error(profiles_dir, tmp_path):
    prof = lbook.load_profile("small", profiles_dir)
    nb = _notebook(tmp_path / "02_nb.ipynb", "seed = 1")
    with pytest.raises(ValueError, match=r"overrides \['epochs'\] for 02_nb"):
        lbook.notebook_parameters(prof, nb)


def test_malformed_profile(tmp_path):
    (tmp_path / "bad.yaml").write_text("description: x\ndefault: {epochs: 1}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        lbook.load_profile("bad", tmp_path)


def test_execute_writes_copies_and_log_and_stops_on_failure(profiles_dir, tmp_path, capsys,
                                                            monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_nb.ipynb", "profile = 'smoke'\nepochs = 1",
              "import os\nprint(profile, epochs, os.path.basename(os.getcwd()))")
    _notebook(nbs / "02_nb.ipynb", "epochs = 1", "raise RuntimeError('boom')")
    _notebook(nbs / "03_nb.ipynb", "epochs = 1\ndataset = 'x'\nseed = 1")
    out = tmp_path / "executed"
    log = lbook.execute(lbook.load_profile("small", profiles_dir), only=["01_nb"], out_dir=out,
                        notebooks_dir=nbs)
    assert log["notebooks"]["01_nb"]["status"] == "ok"
    assert json.loads((out / "run_log.json").read_text())["profile"] == "small"
    executed = nbformat.read(out / "01_nb.ipynb", as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert outputs.strip() == "small 2 notebooks"  # parameters injected, cwd = notebooks dir
    assert "01_nb" in capsys.readouterr().out

    rc = lbook.main(["execute", "--profile", "small", "--profiles-dir", str(profiles_dir),
                     "--notebooks-dir", str(nbs), "--out-dir", str(out), "--only", "02_nb", "03_nb"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "02_nb" in err and "RuntimeError: boom" in err and "partial notebook" in err
    assert (out / "02_nb.ipynb").exists() and not (out / "03_nb.ipynb").exists()
    log = json.loads((out / "run_log.json").read_text())
    assert log["notebooks"]["02_nb"]["status"] == "failed"


def test_injected_parameters_cell_is_removed_from_the_page_and_the_note_follows_it(tmp_path):
    nb = nbformat.read(_notebook(tmp_path / "01_nb.ipynb", "epochs = 1"), as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("epochs = 2",
                                                 metadata={"tags": ["injected-parameters"]}))
    nbformat.write(nb, tmp_path / "01_nb.ipynb")
    prof = {"name": "small", "description": "small test profile"}
    lbook._add_profile_note(tmp_path / "01_nb.ipynb", prof, 3.0, {"cpu_count": 2})
    cells = nbformat.read(tmp_path / "01_nb.ipynb", as_version=4).cells
    assert "remove-cell" in cells[2].metadata["tags"]  # myst-nb drops it from the page
    assert "remove-cell" not in cells[1].metadata["tags"]  # the notebook's own block stays
    assert "lslu-profile-note" in cells[3].metadata["tags"]


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_rerun_command_shown_in_the_chapter_works(path, tmp_path, monkeypatch):
    """The papermill command of the chapter's rerun cell, run as given (prepare only)."""
    import shlex
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if "lslu-rerun" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged lslu-rerun, found {len(cells)}"
    block = re.search(r"```bash\n(.*?)```", cells[0].source, re.S)
    assert block, f"{path.name}: the rerun cell has no ```bash block"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    assert argv[:2] == ["papermill", f"notebooks/{path.name}"] and "-p" in argv and "-y" in argv
    out = tmp_path / "out.ipynb"
    argv[argv.index("out.ipynb")] = str(out)
    monkeypatch.chdir(ROOT)  # the cell says: from the repository root
    res = CliRunner().invoke(papermill_cli, argv[1:] + ["--prepare-only"])
    assert res.exit_code == 0, res.output
    declared = lbook.declared_parameters(path)
    given = {argv[argv.index("-p") + 1]: None} | yaml.safe_load(argv[argv.index("-y") + 1])
    assert set(given) <= set(declared), f"{path.name}: {sorted(set(given) - set(declared))} undeclared"
    injected = [c.source for c in nbformat.read(out, as_version=4).cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all(re.search(rf"^{name} = ", injected[0], re.M) for name in given)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_are_tags_not_visible_comments(path):
    from nbval.plugin import metadata_tags
    nb = nbformat.read(path, as_version=4)
    visible = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code"
               and re.search(r"^\s*#\s*(NBVAL_|PYTEST_VALIDATE_)", c.source, re.M)]
    assert not visible, f"{path.name}: nbval markers shown to the reader: {visible}"
    unknown = {t for c in nb.cells for t in c.metadata.get("tags", [])
               if t.startswith("nbval") and t not in metadata_tags}
    assert not unknown, f"{path.name}: tags nbval does not know: {unknown}"


def test_relative_results_dir_is_the_one_of_the_starting_folder(profiles_dir, tmp_path,
                                                                monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_nb.ipynb", "profile = 'x'\nepochs = 1\ndataset = 'd'\nseed = 0",
              "from lslu.results import ResultsStore\nprint(ResultsStore().root)")
    _notebook(nbs / "02_nb.ipynb", "epochs = 1")  # the profile has an entry for it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LSLU_RESULTS_DIR", "rel/results")
    log = lbook.execute(lbook.load_profile("small", profiles_dir), only=["01_nb"],
                        out_dir=tmp_path / "out", notebooks_dir=nbs)
    executed = nbformat.read(tmp_path / "out" / "01_nb.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    # the kernel runs in notebooks/, yet uses the folder the command was started from
    assert printed.strip() == str(tmp_path / "rel" / "results")
    assert log["results_dir"].endswith("rel/results")


def test_sigterm_still_writes_the_run_log(profiles_dir, tmp_path):
    import signal
    import time
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_nb.ipynb", "epochs = 1\nprofile = 'x'\ndataset = 'd'\nseed = 0",
              "import time\ntime.sleep(120)")
    _notebook(nbs / "02_nb.ipynb", "epochs = 1")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lslu.book", "execute", "--profile", "small",
                             "--profiles-dir", str(profiles_dir), "--notebooks-dir", str(nbs),
                             "--out-dir", str(out)], cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "01_nb.ipynb").exists():  # papermill writes its copy when the kernel runs
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    log = json.loads((out / "run_log.json").read_text())
    assert log["notebooks"]["01_nb"]["status"] == "interrupted"
    assert "SIGTERM" in err and "Traceback" not in err


def test_cli_reports_a_missing_profiles_dir_in_one_line(tmp_path, capsys):
    rc = lbook.main(["execute", "--profile", "smoke", "--profiles-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "profiles_dir" in err and len(err.strip().splitlines()) == 1
