"""Every relative link in README.md and docs/ resolves, to a file and to a heading."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)=\"([^\"]*)\"", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def documents(root=ROOT):
    """The Markdown files whose links are checked: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text):
    """The lines outside fenced code blocks."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield line


def slug(heading):
    """GitHub's anchor for a heading: its text, lower-case, punctuation dropped, spaces
    to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor GitHub gives the headings of a Markdown file (repeats get -1, -2...)."""
    seen, result = {}, set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path):
    """The link targets written in a Markdown file, outside code."""
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for pattern in (INLINE_LINK, REFERENCE, HTML_LINK):
            for match in pattern.finditer(line):
                yield match.group(1)


def broken_links(paths, root=ROOT):
    """(file, target, why) for every relative link that does not resolve."""
    problems = []
    for path in paths:
        for target in links(path):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue  # a URL elsewhere: not checked here (no network)
            name, _, anchor = target.partition("#")
            name = name.split("?", 1)[0]
            if not name:
                resolved = path
            elif name.startswith("/"):
                resolved = root / name.lstrip("/")
            else:
                resolved = path.parent / name
            relative = path.relative_to(root).as_posix()
            if not resolved.exists():
                problems.append((relative, target, "no such file"))
            elif not resolved.resolve().is_relative_to(root):
                problems.append((relative, target, "outside the repository"))
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append((relative, target, "no such heading"))
    return problems


def test_slug_follows_githubs_rules():
    assert slug("Relays and scaling") == "relays-and-scaling"
    assert slug("Watch it live: the console") == "watch-it-live-the-console"
    assert slug("`GET /favorites` answers") == "get-favorites-answers"
    assert slug("Event relays (issue #11)") == "event-relays-issue-11"
    assert slug("Slow clients & outages") == "slow-clients--outages"
    assert slug("snake_case stays, dots. go") == "snake_case-stays-dots-go"
    assert slug("See [the guide](docs/x.md)") == "see-the-guide"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Usage\n```\n## Not a heading\n```\n## Usage\n### Usage\n")
    assert anchors(page) == {"title", "usage", "usage-1", "usage-2"}


def test_broken_files_and_anchors_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n## Set up\nBack to [the top](../README.md#project) and [here](#set-up).\n"
        "[gone](#tear-down) [up](../../elsewhere.md)\n")
    (tmp_path / "README.md").write_text(
        "# Project\n[guide](docs/guide.md#set-up), [missing](docs/missing.md), "
        "[bad anchor](docs/guide.md#setup), [web](https://example.com/x.md#nowhere), "
        "`[code](nowhere.md)`, ![shot](docs/shot.png)\n```\n[fenced](nowhere.md)\n```\n"
        "[ref]: docs/absent.md\n")
    assert broken_links(documents(tmp_path), tmp_path) == [
        ("README.md", "docs/missing.md", "no such file"),
        ("README.md", "docs/guide.md#setup", "no such heading"),
        ("README.md", "docs/shot.png", "no such file"),
        ("README.md", "docs/absent.md", "no such file"),
        ("docs/guide.md", "#tear-down", "no such heading"),
        ("docs/guide.md", "../../elsewhere.md", "no such file"),
    ]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    paths = documents()
    assert {path.relative_to(ROOT).as_posix() for path in paths} >= {
        "README.md", "docs/api.md", "docs/operations.md"}
    checked = [target for path in paths for target in links(path)
               if not SCHEME.match(target)]
    assert len(checked) >= 20  # the README and the guides do link into each other
    assert broken_links(paths) == []


def test_the_readme_stays_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300
