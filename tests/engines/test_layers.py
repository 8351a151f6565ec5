"""The engines are a layer of their own: synchronous, and blind to the services above."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINES = Path(__file__).resolve().parents[2] / "src" / "hubbub" / "engines"
FORBIDDEN = ("asyncio", "fastapi", "starlette", "uvicorn", "websockets", "httpx")
ABOVE = ("hubbub.transcriber", "hubbub.web", "hubbub.client", "hubbub.cli", "hubbub.deploy")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_engine_module_imports_asyncio_or_a_service():
    bad = {
        f"{path.relative_to(ENGINES)}: {name}"
        for path in ENGINES.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN or name.startswith(ABOVE)
    }
    assert bad == set()


def test_importing_the_engines_loads_nothing_of_the_services():
    code = (
        "import sys, hubbub.engines.factory, hubbub.engines.cpu.engine, hubbub.engines.base;"
        f"print(sorted(m for m in sys.modules if m.startswith({ABOVE!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_choosing_an_engine_without_a_gpu_leaves_torch_unimported():
    """With the nemo extra installed (torch with it) on a machine without an NVIDIA GPU,
    ``auto`` picks the CPU engine without importing torch: ~180 MB of memory, measured."""
    code = (
        "import sys; import hubbub.engines.factory as f; from hubbub.settings import Settings;"
        "f.GPU_NODES = ('/nonexistent/nvidiactl',);"  # as on a machine without a GPU
        "print(f.resolve_engine_name(Settings()), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]
