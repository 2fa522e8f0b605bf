"""Ctrl+C ends every verb quietly, whenever it comes: while the command line imports the server's parts, while
it loads modules, while a verb runs (exit status 130, as a shell expects, and no traceback), and a started
server stops cleanly (status 0, as it always did).

Each test runs ``python -m botpress_py`` as a real process and sends it SIGINT at a moment it has shown
it reached. Only the interpreter's own start, before any code of botpress-py runs, is out of reach.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from botpress_py.testing import write_json

from .conftest import REPO_ROOT

# A module that can take its time: at import (module loading), or in its verb (a verb that runs).
SLOW_MODULE = '''
import os
import sys
import time

from botpress_py.sdk import hookimpl

if os.environ.get("SLOW_MODULE_AT_IMPORT"):
    print("slow module: importing", file=sys.stderr, flush=True)
    time.sleep(60)


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("wait-here", help="wait a minute (test module command)")
    parser.add_argument("--data")

    def run(args):
        print("slow module: waiting", flush=True)
        time.sleep(60)
        return 0

    parser.set_defaults(func=run)
'''


def slow_module_data(tmp_path: Path) -> tuple[Path, Path]:
    """A data folder loading only the slow module, and the folder that holds the module."""
    modules = tmp_path / "modules"
    write_json(modules / "slow" / "module.json", {"name": "slow", "version": "1.0.0", "entry": "slow_module",
                                                  "kind": "logic", "description": "Takes its time."})
    (modules / "slow" / "slow_module").mkdir()
    (modules / "slow" / "slow_module" / "__init__.py").write_text(SLOW_MODULE, encoding="utf-8")
    data = tmp_path / "data"
    write_json(data / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/slow", "enabled": True}]})
    return data, modules


class Process:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.err = ""
        self.out = ""

    async def wait_for_stderr(self, text: str, timeout: float = 30.0) -> None:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while text not in self.err:
                line = await self.process.stderr.readline()
                assert line, f"the process ended before {text!r} showed: {self.err!r}"
                self.err += line.decode()

    async def wait_for_stdout(self, text: str, timeout: float = 30.0) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.out:
                line = await self.process.stdout.readline()
                assert line, f"the process ended before {text!r} showed: {self.out!r} {self.err!r}"
                self.out += line.decode()

    async def ctrl_c(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGINT, as Ctrl+C at a terminal sends it; (exit status, what it wrote to stderr after that)."""
        before = len(self.err)
        self.process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        self.out += out.decode()
        self.err += err.decode()
        assert self.process.returncode is not None
        return self.process.returncode, self.err[before:]


@asynccontextmanager
async def botpress_py(*argv: str, run: tuple[str, ...] = ("-m", "botpress_py"), **env: str) -> AsyncIterator[Process]:
    """``python -m botpress_py ARGV`` (or ``python RUN ARGV``), with ``env`` added to a clean environment."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("BP_", "PORT", "EXTERNAL_URL")) and k != "DATABASE_URL"}
    environment.update(PYTHONUNBUFFERED="1", **env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, *run, *argv, cwd=REPO_ROOT, env=environment,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        yield Process(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ``botpress-py ARGV`` as the installed console command runs it (``sys.exit(entry_point.main())``), with an
# import hook that stalls once the command line imports the server's parts (cli.py imports bots.py): Ctrl+C
# then comes in the middle of those imports, every time.
STALLED_IMPORTS = """
import sys
import time


class StallOnce:
    def find_spec(self, name, path=None, target=None):
        if name == "botpress_py.bots":
            sys.meta_path.remove(self)
            print("importing botpress_py.bots", file=sys.stderr, flush=True)
            time.sleep(60)
        return None


sys.meta_path.insert(0, StallOnce())
sys.argv = ["botpress-py", *sys.argv[1:]]
from botpress_py.entry_point import main

sys.exit(main())
"""


async def test_ctrl_c_while_the_command_line_imports_the_server_ends_it_quietly(tmp_path: Path) -> None:
    script = tmp_path / "stalled_imports.py"
    script.write_text(STALLED_IMPORTS, encoding="utf-8")
    async with botpress_py("check", "--data", str(tmp_path / "data"), BP_MODULES_PATH=str(tmp_path),
                           run=(str(script),)) as process:
        await process.wait_for_stderr("importing botpress_py.bots\n")
        code, err = await process.ctrl_c()
    assert code == 130
    assert err == "\n", "no traceback: only the line the ^C left open"
    assert process.out == "", "stopped before the verb said anything"


async def test_ctrl_c_while_modules_load_ends_it_quietly(tmp_path: Path) -> None:
    data, modules = slow_module_data(tmp_path)
    async with botpress_py("wait-here", "--data", str(data), BP_MODULES_PATH=str(modules),
                           SLOW_MODULE_AT_IMPORT="1") as process:
        await process.wait_for_stderr("slow module: importing\n")
        code, err = await process.ctrl_c()
    assert code == 130
    assert err == "\n", "no traceback: only the line the ^C left open"


async def test_ctrl_c_in_a_running_verb_ends_it_quietly(tmp_path: Path) -> None:
    data, modules = slow_module_data(tmp_path)
    async with botpress_py("wait-here", "--data", str(data), BP_MODULES_PATH=str(modules)) as process:
        await process.wait_for_stdout("slow module: waiting\n")
        code, err = await process.ctrl_c()
    assert code == 130
    assert err == "\n", "no traceback: only the line the ^C left open"


async def test_ctrl_c_on_a_started_server_stops_it_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_json(data / "global" / "botpress.config.json", {"modules": []})
    async with botpress_py("start", "--data", str(data), "--port", "0", "--host", "127.0.0.1",
                           BP_MODULES_PATH=str(tmp_path)) as process:
        await process.wait_for_stdout(" ready on ")
        code, err = await process.ctrl_c()
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "botpress-py stopped" in err


def test_the_console_command_is_the_entry_point_that_catches_ctrl_c() -> None:
    """``botpress-py`` (installed from pyproject.toml) starts where nothing is imported before Ctrl+C is caught."""
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == {"botpress-py": "botpress_py.entry_point:main"}
    source = (REPO_ROOT / "botpress_py" / "entry_point.py").read_text(encoding="utf-8")
    top_level_imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert top_level_imports == ["from __future__ import annotations", "import signal", "import sys"]
