"""What a step can see and reach: filesystem, network, environment; and what steps share."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.sandbox import SANDBOX_HOME, WORKSPACE, JobSandbox, RootFS

pytestmark = pytest.mark.sandbox

OpenSandbox = Callable[..., JobSandbox]


# -- filesystem ------------------------------------------------------------------------------------


def test_host_image_hides_home_projects_and_secrets(
    host: RootFS, open_sandbox: OpenSandbox, sh, tmp_path: Path
) -> None:
    hidden = ["/work", "/work/main", "/var/lib", "/etc/shadow", "/etc/gshadow", "/etc/sudoers"]
    hidden += ["/etc/ssl/private", str(tmp_path), str(tmp_path / "state"), f"{Path.home()}/.gitconfig"]
    with open_sandbox(host) as sandbox:
        outcome, text = sh(
            sandbox,
            f"""
            ls -A /root; echo "--home"; ls -A /home; echo "--"
            for p in {" ".join(hidden)}; do test -e "$p" && echo "VISIBLE $p"; done
            test -r /etc/passwd && echo passwd-ok
            python3 -c 'print("python-ok")'
            cat {WORKSPACE}/README
            """,
        )
    assert outcome.ok, text
    home_listing, _, rest = text.partition("--home\n")
    assert home_listing == ""  # the job's /root is fresh and empty, not the host's
    assert rest.startswith("--\n")  # /home is empty
    assert "VISIBLE" not in text
    assert "passwd-ok" in text and "python-ok" in text and "workspace file" in text


def test_host_image_lower_layers_are_read_only(host: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(host) as sandbox:
        outcome, text = sh(sandbox, "touch /usr/bin/kiln-x && echo WROTE")
    assert not outcome.ok and "WROTE" not in text
    assert "Read-only file system" in text
    assert not Path("/usr/bin/kiln-x").exists()


def test_busybox_writes_go_to_the_upper_not_the_layer(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    layer = busybox.layers[0]
    before = sorted(os.listdir(layer / "bin"))
    with open_sandbox(busybox) as sandbox:
        outcome, text = sh(sandbox, "echo new > /bin/kiln-new && rm /bin/ls && cat /bin/kiln-new")
        assert outcome.ok and text == "new\n", text
        # step 2 of the same job sees step 1's changes
        outcome, text = sh(sandbox, "cat /bin/kiln-new; test -e /bin/ls || echo ls-gone")
        assert outcome.ok and text == "new\nls-gone\n", text
    assert sorted(os.listdir(layer / "bin")) == before
    assert not (layer / "bin" / "kiln-new").exists()


def test_steps_of_a_job_share_files_and_jobs_do_not(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox, "job1") as first:
        outcome, _ = sh(first, f"echo one > {SANDBOX_HOME}/f && echo one > /tmp/f && echo one > /etc/f")
        assert outcome.ok
        outcome, text = sh(first, f"cat {SANDBOX_HOME}/f /etc/f")
        assert outcome.ok and text == "one\none\n", text
        # a second job, running at the same time, sees none of it
        with open_sandbox(busybox, "job2") as second:
            outcome, text = sh(second, f"ls -A {SANDBOX_HOME} /tmp; test -e /etc/f && echo LEAK; true")
            assert outcome.ok and text.split() == [f"{SANDBOX_HOME}:", "/tmp:"], text


def test_workspace_is_shared_read_write_with_the_host(
    busybox: RootFS, open_sandbox: OpenSandbox, sh, workspace: Path
) -> None:
    with open_sandbox(busybox) as sandbox:
        outcome, text = sh(sandbox, "pwd; echo built > out.txt")
    assert outcome.ok and text == f"{WORKSPACE}\n"
    assert (workspace / "out.txt").read_text() == "built\n"


def test_step_has_no_privileges(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox) as sandbox:
        outcome, text = sh(
            sandbox,
            """
            grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status
            v=$(cat /proc/sys/vm/swappiness); echo "$v" > /proc/sys/vm/swappiness && echo SYSCTL-WRITTEN
            mount -t tmpfs none /mnt && echo MOUNTED
            unshare -r true && echo USERNS
            hostname other && echo RENAMED
            true
            """,
        )
    assert outcome.ok, text
    caps = [line.split()[1] for line in text.splitlines() if line.startswith("Cap")]
    assert caps == ["0000000000000000"] * 3, text
    for escaped in ("SYSCTL-WRITTEN", "MOUNTED", "USERNS", "RENAMED"):
        assert escaped not in text


# -- environment -----------------------------------------------------------------------------------


def test_env_is_exactly_what_was_passed(
    busybox: RootFS, open_sandbox: OpenSandbox, collect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_TEST_HOST_SECRET", "must-not-leak")
    env = {"PATH": "/usr/bin:/bin", "HOME": SANDBOX_HOME, "WITH_SPACE": "a b", "EMPTY": ""}
    out = collect()
    with open_sandbox(busybox) as sandbox:
        outcome = sandbox.run(["env"], env=env, network=False, timeout_s=20, output=out)
    assert outcome.ok
    # PWD is the only addition: bwrap always exports the directory it chdir'd to, as a shell does.
    expected = {**env, "PWD": WORKSPACE}
    assert sorted(out.text.splitlines()) == sorted(f"{k}={v}" for k, v in expected.items())


# -- network ---------------------------------------------------------------------------------------


@pytest.fixture
def tcp_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's 127.0.0.1 that records what each connection sends."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                received.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def test_no_network_by_default_and_opt_in_works(
    busybox: RootFS, open_sandbox: OpenSandbox, sh, tcp_server: tuple[int, list[bytes]]
) -> None:
    port, received = tcp_server
    connect = f"echo hello | nc -w 3 127.0.0.1 {port} && echo CONNECTED"
    with open_sandbox(busybox) as sandbox:
        outcome, text = sh(sandbox, "cut -d: -f1 /proc/net/dev | tail -n +3")
        assert outcome.ok and text.split() == ["lo"], text
        outcome, text = sh(sandbox, connect)
        assert not outcome.ok and "CONNECTED" not in text
        assert received == []

        outcome, text = sh(sandbox, connect, network=True)
        assert outcome.ok and "CONNECTED" in text, text
    assert received == [b"hello\n"]


# -- output ----------------------------------------------------------------------------------------


def test_output_streams_while_the_step_runs(busybox: RootFS, open_sandbox: OpenSandbox, collect) -> None:
    out = collect()
    with open_sandbox(busybox) as sandbox:
        outcome = sandbox.run(
            ["sh", "-c", "echo first; echo err >&2; sleep 1.5; echo last"],
            env={"PATH": "/bin"},
            network=False,
            timeout_s=20,
            output=out,
        )
    assert outcome.ok
    assert out.text == "first\nerr\nlast\n"
    first_at, last_at = out.chunks[0][0], out.chunks[-1][0]
    assert last_at - first_at >= 1.0  # "first" was delivered long before the step ended
    assert outcome.duration_s >= 1.5
