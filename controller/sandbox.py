"""A private Podman store and REST service in a temporary directory.

Used by `edgeprune demo` and by the test fixtures, so both exercise the real
Podman code paths without touching the host's store, its configuration or the
network. The binary is always a parameter: a second Podman (e.g. a private
Podman 5 build under a prefix, design.md section 5) plugs in the same way.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

BINARIES_ENV = "EDGEPRUNE_PODMAN_BINARIES"
SYSTEM_LABEL = "system"

# AF_UNIX paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
# Variables that would make the CLI talk to some other (remote) service.
_REMOTE_ENV = ("CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINER_SSHKEY", "CONTAINER_PASSPHRASE")


@dataclass(frozen=True)
class PodmanBinary:
    path: str
    label: str  # short name used in test ids and messages, e.g. "system"


def find_podman() -> PodmanBinary | None:
    """The system Podman on PATH, if any."""
    path = shutil.which("podman")
    return PodmanBinary(path=path, label=SYSTEM_LABEL) if path else None


def parse_binaries_env(value: str) -> list[PodmanBinary]:
    """Parse `label=path` entries separated by os.pathsep; bad entries raise ValueError."""
    binaries: list[PodmanBinary] = []
    for entry in filter(None, (part.strip() for part in value.split(os.pathsep))):
        label, sep, path = entry.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"{BINARIES_ENV}: entry {entry!r} is not of the form label=path")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ValueError(f"{BINARIES_ENV}: {label}: {path} is not an executable file")
        binaries.append(PodmanBinary(path=path, label=label))
    return binaries


def available_binaries(environ: dict[str, str] | None = None) -> list[PodmanBinary]:
    """System Podman plus those named in EDGEPRUNE_PODMAN_BINARIES (labels unique)."""
    env = os.environ if environ is None else environ
    found = [b for b in (find_podman(),) if b is not None]
    for extra in parse_binaries_env(env.get(BINARIES_ENV, "")):
        if any(b.label == extra.label for b in found):
            raise ValueError(f"{BINARIES_ENV}: label {extra.label!r} is used twice")
        found.append(extra)
    return found


class SandboxError(RuntimeError):
    """The sandbox could not be started or a CLI call against it failed."""


class Sandbox:
    """Private store (vfs) + `podman system service` on a socket in a temp dir.

    `root` is the sandbox directory (everything lives under it); `storage_path`
    is Podman's graphRoot inside it.
    """

    def __init__(
        self,
        binary: PodmanBinary,
        base_dir: Path | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self._base_dir = base_dir
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir: Path | None = None
        self._service: subprocess.Popen[bytes] | None = None
        self._service_log: Path | None = None
        self._artifacts: bool | None = None

    # -- layout -------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._dir is None:
            raise SandboxError("sandbox not started")
        return self._dir

    @property
    def storage_path(self) -> Path:
        return self.root / "storage"

    @property
    def socket_path(self) -> Path:
        return self.root / "podman.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _global_args(self) -> list[str]:
        # Flags as well as the private config files: the flags win over any
        # config a binary might still find, and keep every runtime dir private.
        return [
            "--root",
            str(self.storage_path),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "vfs",
            "--tmpdir",
            str(self.root / "tmp"),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def _env(self) -> dict[str, str]:
        conf = self.root / "conf"
        env = {k: v for k, v in os.environ.items() if k not in _REMOTE_ENV}
        env.update(
            CONTAINERS_CONF=str(conf / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(conf / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(conf / "registries.conf"),
            TMPDIR=str(self.root / "tmp"),
            # Podman 5 on a cgroups-v1 host warns on every command; the
            # warning would bury the real error in SandboxError messages.
            PODMAN_IGNORE_CGROUPSV1_WARNING="1",
        )
        return env

    def cli(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The argv prefix and environment that run this binary's CLI on this store."""
        return (self.binary.path, *self._global_args()), self._env()

    def _write_config(self) -> None:
        conf = self.root / "conf"
        for sub in ("conf", "storage", "run", "tmp", "networks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (conf / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{self.storage_path}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        # No search registries: a short name can never turn into a pull.
        (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
        (conf / "containers.conf").write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.root / "events.log"}"\n'
            f'image_copy_tmp_dir = "{self.root / "tmp"}"\n'
            "[network]\n"
            f'network_config_dir = "{self.root / "networks"}"\n'
        )

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._service is not None:
            return
        if self._base_dir is not None:
            self._base_dir.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="edgeprune-", dir=self._base_dir))
        try:
            if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
                raise SandboxError(f"socket path too long for AF_UNIX: {self.socket_path}")
            self._write_config()
            self._service_log = self.root / "service.log"
            with self._service_log.open("wb") as log:
                self._service = subprocess.Popen(
                    [
                        self.binary.path,
                        *self._global_args(),
                        "system",
                        "service",
                        "--time",
                        "0",
                        self.url,
                    ],
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Own process group: stop() can signal the service and
                    # anything it spawned without touching anything else.
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._service is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._service.poll() is not None:
                raise SandboxError(
                    f"{self.binary.label} podman service exited with {self._service.returncode}"
                    f" before answering /_ping:\n{self._service_output()}"
                )
            if _ping(self.socket_path):
                return
            time.sleep(0.05)
        raise SandboxError(
            f"{self.binary.label} podman service did not answer /_ping on {self.url}"
            f" within {self._start_timeout:g}s:\n{self._service_output()}"
        )

    def _service_output(self) -> str:
        try:
            text = self._service_log.read_text(errors="replace") if self._service_log else ""
        except OSError:
            text = ""
        return text[-4000:] or "(no output)"

    def stop(self) -> None:
        if self._dir is None:
            return
        try:
            self._stop_service()
            # Containers can hold mounts and storage locks: release them
            # through Podman itself before deleting the directory.
            if self.storage_path.exists():
                self.podman("rm", "-af", check=False)
                self.podman("rmi", "-af", check=False)
            _unmount_below(self.root)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self._dir = None
            self._artifacts = None

    def _stop_service(self) -> None:
        service, self._service = self._service, None
        if service is None or service.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=self._stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.pid, signal.SIGKILL)
            service.wait(timeout=self._stop_timeout)

    # -- CLI helpers --------------------------------------------------------

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the CLI of the same binary against the same store."""
        proc = subprocess.run(
            [self.binary.path, *self._global_args(), *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                f"podman {' '.join(args)} failed with {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def make_image(self, name: str | None, payload: str) -> str:
        """Import a one-file image; the same payload always gives the same ID."""
        tar_path = self.root / "tmp" / "payload.tar"
        tar_path.write_bytes(_payload_tar(payload))
        try:
            args = ["import", "--quiet", str(tar_path)]
            out = self.podman(*args, *([name] if name else [])).stdout
        finally:
            tar_path.unlink(missing_ok=True)
        return _last_line(out).removeprefix("sha256:")

    def tag(self, image: str, name: str) -> None:
        self.podman("tag", image, name)

    def create_container(self, image: str, name: str) -> str:
        """Create (not start) a container; it holds the image like a stopped one."""
        out = self.podman("create", "--network", "none", "--name", name, image, "true").stdout
        return _last_line(out)

    def make_manifest_list(self, name: str, *images: str) -> str:
        """A local manifest list referencing local images (no registry involved)."""
        list_id = _last_line(self.podman("manifest", "create", name).stdout)
        for image in images:
            self.podman("manifest", "add", name, f"containers-storage:{image}")
        return list_id.removeprefix("sha256:")

    def reset(self) -> None:
        """Empty the store. Force is fine here: test/demo hygiene only."""
        self.podman("rm", "--all", "--force")
        self.podman("rmi", "--all", "--force")
        if self._supports_artifacts():
            # No {{.Name}} in `artifact ls` and no `rm --all` in 5.4. An
            # unnamed artifact makes the listing fail: such a store cannot be
            # emptied through Podman, and that must not go unnoticed.
            listed = self.podman(
                "artifact", "ls", "--noheading", "--format", "{{.Repository}}:{{.Tag}}"
            ).stdout
            for name in filter(None, (n.strip().removesuffix(":") for n in listed.splitlines())):
                self.podman("artifact", "rm", name)

    def _supports_artifacts(self) -> bool:
        # Podman 5.4+ only; asked once per sandbox.
        if self._artifacts is None:
            # By version: `podman artifact --help` succeeds even on 4.3.
            version = self.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
            major, _, rest = version.partition(".")
            minor = rest.partition(".")[0]
            self._artifacts = (int(major or 0), int(minor or 0)) >= (5, 4)
        return self._artifacts


def _ping(path: Path) -> bool:
    """True when the service answers GET /_ping on the socket."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


def _payload_tar(payload: str) -> bytes:
    # Fixed metadata so the same payload gives the same layer and image ID.
    data = payload.encode()
    info = tarfile.TarInfo("payload.txt")
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise SandboxError("podman printed no ID")
    return lines[-1]


def _unmount_below(path: Path) -> None:
    """Lazily unmount anything left mounted under path (deepest first)."""
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [f.split()[4] for f in lines if len(f.split()) > 4]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
