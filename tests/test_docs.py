"""The repository's text keeps its promises about sources: no link leads out of the repository,
and every paper the code or the docs cite by author and year is in README's References.
"""
from __future__ import annotations

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXT = (".py", ".md", ".proto", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".ini", ".json", ".sh", "")
# hosts a link may name: this machine, and the services docker-compose.yml starts beside the server
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "prometheus", "grafana", "rnnstream"}
# links to documents (web and file-transfer schemes); a connection string such as
# postgresql://user@db/rnnstream or nginx's grpc://upstream names a service the user runs
URL = re.compile(r"\b(?:https?|ftp|file)://([^/\s\"'`<>)\]:]+)")
# "Menick et al. 2020", "Freund and Schapire (1997)", "Cesa-Bianchi & Lugosi 2006", "West 1979"
CITATION = re.compile(r"\b([A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?: et al\.?| and [A-Z][a-z]+| & [A-Z][a-z]+)?,? "
                      r"\(?((?:19|20)\d\d)\)?")
MONTHS = {"January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"}


def _tracked_text_files() -> list[pathlib.Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in names.splitlines():
        path = ROOT / name
        if "_pb2" in name or name.startswith("bench/results/") or not path.is_file():
            continue
        if path.suffix in TEXT or name == ".ci/run":
            files.append(path)
    assert len(files) > 50, "git ls-files found too few files: is this a checkout?"
    return files


def _references() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## References\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert match, "README.md has no '## References' section"
    return match.group(1)


def test_no_link_leads_out_of_the_repository():
    outside = []
    for path in _tracked_text_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for host in URL.findall(line):
                templated = host[0] in "{%"  # a host filled in at run time: f"{host}", "%s"
                if not templated and host not in LOCAL_HOSTS and not host.startswith("127."):
                    outside.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}")
    assert not outside, "links out of the repository (cite by author, year, title in README's " \
                        "References instead):\n" + "\n".join(outside)


def test_every_cited_paper_is_in_the_references():
    entries = [" ".join(e.split()) for e in re.split(r"\n- ", _references())]
    missing = []
    for path in _tracked_text_files():
        if path == ROOT / "README.md":
            text = (ROOT / "README.md").read_text().split("## References")[0]
        else:
            text = path.read_text(errors="replace")
        for author, year in set(CITATION.findall(text)):
            if author in MONTHS:
                continue
            if not any(author in e and year in e for e in entries):
                missing.append(f"{path.relative_to(ROOT)}: {author} {year}")
    assert not missing, "cited but not in README's References (author, year, title):\n" + \
                        "\n".join(sorted(set(missing)))


def test_nndl_equations_cited_in_the_code_point_into_the_references():
    cited = [p for p in _tracked_text_files() if "NNDL" in p.read_text(errors="replace")]
    assert cited, "no NNDL citation found: the pattern of this test is stale"
    refs = " ".join(_references().split())
    assert "Neural Networks and Deep Learning" in refs and "NNDL" in refs and "Qiu Xipeng" in refs
