"""deploy/Dockerfile, read statically (no Docker engine here): a build stage and a slim runtime
stage from a pinned base, no build tools in the runtime, an unprivileged user, a health check on
the health route, the HTTP port exposed, `segstream` as the entrypoint."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from tests.deploy.files import (
    DEPLOY,
    DOCKERFILE,
    REPO,
    health_check_passes,
    health_server,
    pinned,
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: comments dropped, continuations joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, "an instruction before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def test_two_stages_from_a_pinned_slim_python() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert pinned(stage.base), stage.base
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", stage.base)
    build, runtime = stages[0], stages[-1]
    assert build.name, "the build stage is named, for the runtime to take its wheels"
    # `COPY --from=build` or `RUN --mount=...,from=build`
    assert [i for i in runtime.all("RUN") + runtime.all("COPY") if f"from={build.name}" in i]


def test_the_runtime_stage_has_no_build_tools_and_no_sources() -> None:
    runtime = _stages()[-1]
    text = " ".join(runtime.all("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "pip wheel", "python -m build"):
        assert tool not in text, tool
    assert "--no-index" in text  # installs the built wheels only, nothing fetched
    assert not runtime.all("ADD")
    assert not [c for c in runtime.all("COPY") if "--from" not in c], "sources in the runtime"


def test_it_runs_as_an_unprivileged_user() -> None:
    users = _stages()[-1].all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_health_check_port_and_entrypoint() -> None:
    runtime = _stages()[-1]
    (check,) = runtime.all("HEALTHCHECK")
    command = check.split(" CMD ", 1)[1]  # shell form: run by /bin/sh in the image
    with health_server("/health/live") as port:
        assert health_check_passes(["sh", "-c", command], port)
    with health_server("/health/ready") as port:
        assert not health_check_passes(["sh", "-c", command], port)
    assert "8080" in runtime.all("EXPOSE")
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["segstream"]
    env = " ".join(runtime.all("ENV"))
    assert "SEGSTREAM_HTTP_HOST=0.0.0.0" in env  # reachable from outside the container


def test_the_build_copies_what_exists_and_the_context_lets_it_through() -> None:
    build = _stages()[0]
    copied = [shlex.split(c)[:-1] for c in build.all("COPY")]
    sources = {source for sources in copied for source in sources}
    for source in sources:
        assert (REPO / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore, source
