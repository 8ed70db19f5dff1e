"""Pure parts of image building: apt's simulation output, ChainIDs and image configs."""

from __future__ import annotations

from kiln.images.apt import install_script, missing_versions, parse_simulation
from kiln.images.oci import ImageConfig, chain_id, config_bytes, digest_of

SIMULATION = """\
Reading package lists...
NOTE: This is only a simulation!
Inst libisl23 (0.25-1.1 Debian:12.8/stable [amd64])
Inst cpp-12 [12.2.0-13] (12.2.0-14 Debian:12.8/stable [amd64])
Inst make (4.3-4.1 Debian:12.8/stable [amd64])
Conf make (4.3-4.1 Debian:12.8/stable [amd64])
"""


def test_the_simulation_gives_every_package_and_version_it_would_install() -> None:
    assert parse_simulation(SIMULATION) == {"cpp-12": "12.2.0-14", "libisl23": "0.25-1.1", "make": "4.3-4.1"}


def test_the_install_pins_the_whole_closure() -> None:
    script = install_script({"make": "4.3-4.1", "gcc": "4:12.2.0-3"})
    assert "install -y -qq --no-install-recommends gcc=4:12.2.0-3 make=4.3-4.1" in script


def test_versions_gone_from_the_mirror_are_recognised() -> None:
    output = "E: Version '4.3-4.1' for 'make' was not found\nE: Version '1' for 'gcc' was not found\n"
    assert missing_versions(output) == ["make=4.3-4.1", "gcc=1"]


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id([]) is None
    assert chain_id([a]) == a
    assert chain_id([a, b]) == digest_of(f"{a} {b}".encode())


def test_the_image_digest_covers_layers_and_settings_and_nothing_else() -> None:
    layers = ["sha256:" + "a" * 64]
    config = ImageConfig(env=(("PATH", "/bin"),))
    digest = digest_of(config_bytes(config, layers))
    assert digest == digest_of(config_bytes(ImageConfig(env=(("PATH", "/bin"),)), layers))
    assert digest != digest_of(config_bytes(config.with_env({"CC": "gcc"}), layers))
    assert digest != digest_of(config_bytes(config.with_workdir("/src"), layers))
    assert digest != digest_of(config_bytes(config, [*layers, "sha256:" + "b" * 64]))
