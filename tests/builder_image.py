"""builder-image/Dockerfile, read as the instructions Docker runs (for the deployment tests)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

DOCKERFILE = REPO / "builder-image" / "Dockerfile"
# Read by functions-framework's gunicorn rather than nixery.config (README "Settings").
FRAMEWORK_SETTINGS = frozenset({"THREADS", "WORKERS"})


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]

    @classmethod
    def load(cls, path: Path = DOCKERFILE) -> Dockerfile:
        return cls.parse(path.read_text())

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        instructions = []
        pending = ""
        for line in text.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            keyword, _, arguments = (pending + line).strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
            pending = ""
        return cls(tuple(instructions))

    def base_images(self) -> list[str]:
        """Each FROM's image, with `${NAME}` taken from the default of an ARG declared before
        the first FROM (Docker's rule for arguments a FROM may use)."""
        defaults: dict[str, str] = {}
        bases: list[str] = []
        for instruction in self.instructions:
            if instruction.keyword == "ARG" and not bases:
                name, _, default = instruction.arguments.partition("=")
                defaults[name.strip()] = default.strip()
            elif instruction.keyword == "FROM":
                image = instruction.arguments.split()[0]
                bases.append(
                    re.sub(
                        r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], image
                    )
                )
        return bases

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    @property
    def env(self) -> dict[str, str]:
        """Every ENV the image sets (the KEY=VALUE form)."""
        env = {}
        for arguments in self.all("ENV"):
            for word in shlex.split(arguments):
                name, separator, value = word.partition("=")
                assert separator, f"use ENV KEY=VALUE: {arguments!r}"
                env[name] = value
        return env

    def exposed_ports(self) -> list[int]:
        return [int(port.split("/")[0]) for ports in self.all("EXPOSE") for port in ports.split()]

    @property
    def cmd(self) -> list[str]:
        (cmd,) = self.all("CMD")
        command = json.loads(cmd)  # the exec form: no shell between Cloud Run and the server
        assert isinstance(command, list)
        return command
