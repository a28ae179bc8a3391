"""The tree stays easy to read: no source file over 450 lines, no function over 80 lines without a reason (a
docstring line starting "Long:"), and no comment or docstring that points at a file the repository does not have
(a reader must be able to follow every reference)."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = ("zimage_core", "nodes", "workflows", "web", "bench")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
FILE_REF = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:py|md|js))\b")  # code and documents (not data formats)
# references to other projects' files, named as theirs ("ComfyUI's comfy/ldm/…", "diffusers' pipeline_z_image.py")
EXTERNAL = re.compile(r"ComfyUI|comfy/|diffusers|transformers|spandrel|MediaPipe|mediapipe|GFPGAN|llama\.cpp|"
                      r"Hugging Face|huggingface|torch|PyPI|Registry|\.\./|pyproject|gguf", re.I)


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return [REPO / f for f in out if (REPO / f).is_file()]


def source_files(suffixes: tuple[str, ...] = (".py", ".js")) -> list[Path]:
    return [p for p in tracked_files() if p.suffix in suffixes and p.relative_to(REPO).parts[0] in CODE]


def test_no_source_file_is_over_450_lines():
    long = {str(p.relative_to(REPO)): n for p in source_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these files by concern: {long}"


def test_long_functions_say_why():
    offenders = []
    for path in source_files((".py",)):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and not any(ln.startswith("Long:") for ln in doc.splitlines()):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, "split these functions, or give the reason in a 'Long:' docstring line: " + str(offenders)


def _comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".js":
        return [(text[:m.start()].count("\n") + 1, m.group(0)) for m in re.finditer(r"//[^\n]*|/\*.*?\*/", text, re.S)]
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((getattr(node, "lineno", 1), doc))
    return out


def test_comments_only_point_at_files_the_repository_has():
    files = tracked_files()
    names = {p.name for p in files} | {str(p.relative_to(REPO)) for p in files}
    missing = []
    for path in source_files():
        for line, text in _comments_and_docstrings(path):
            if "DESIGN" in text:
                missing.append(f"{path.relative_to(REPO)}:{line} cites DESIGN, a document this repository lacks")
            for sentence in re.split(r"(?<=[.;:!?])\s+|\n", text):
                for ref in FILE_REF.findall(sentence):
                    inside = (path.parent / ref).exists() or ref in names or Path(ref).name in names
                    if not inside and not EXTERNAL.search(sentence):
                        missing.append(f"{path.relative_to(REPO)}:{line} refers to {ref}")
    assert not missing, missing
