"""The Apache Kafka jars, fetched from Maven Central (there is no docker engine here).

`ensure_installed` fetches `kafka_2.13` and its runtime dependencies with
Maven (`kafka-pom.xml` next to this file) into a cache dir shared by every
local broker.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .kafka_config import KafkaLocalConfig
from .process import StackError, require_binary

Progress = Callable[[str], None]

_POM = Path(__file__).with_name("kafka-pom.xml")
JAVA_HINT = "Install a Java 17+ runtime (Debian: `apt-get install openjdk-17-jre-headless`)."
_MVN_HINT = "Install Maven 3.8+ (Debian: `apt-get install maven`); it fetches the Kafka jars."


def ensure_installed(cfg: KafkaLocalConfig, *, progress: Progress | None = None) -> Path:
    """Return the dir holding the broker's jars, fetching them first if needed.

    Maven runs only when the dir lacks the `kafka_2.13` jar. The jars land in
    a scratch dir that is renamed into place once Maven succeeds, so an
    interrupted fetch never leaves a half-filled libs dir that looks installed.
    Raises :class:`StackError` naming the fix when `java` or `mvn` is missing
    or Maven fails.
    """
    libs = cfg.libs_dir
    if (libs / f"kafka_2.13-{cfg.kafka_version}.jar").is_file():
        return libs
    require_binary("java", hint=JAVA_HINT)
    mvn = require_binary("mvn", hint=_MVN_HINT)
    scratch = libs.with_name("libs.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    say(progress, f"Fetching Apache Kafka {cfg.kafka_version} jars with Maven into {libs} ...")
    started = time.monotonic()
    # A repo of our own under the cache: the fetch neither needs nor pollutes ~/.m2.
    repo = f"-Dmaven.repo.local={cfg.cache_dir / 'm2'}"
    version = f"-Dkafka.version={cfg.kafka_version}"
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={scratch}"]
    result = run([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(_POM), repo, version, *goal])
    if result.returncode != 0:
        raise StackError(
            f"Maven could not fetch Apache Kafka {cfg.kafka_version} (exit {result.returncode}). "
            "Check that Maven Central is reachable and that this version exists "
            f"(`-Dkafka.version`), then retry.\n{tail(result)}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    scratch.rename(libs)
    say(
        progress,
        f"Fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.1f} s.",
    )
    return libs


def say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )


def tail(result: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])
