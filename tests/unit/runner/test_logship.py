import threading

from kiln.api.models import LogChunkIn
from kiln.runner.logship import LogShipper
from kiln.runner.masking import SecretMasker


class Collector:
    def __init__(self, fail_first: int = 0) -> None:
        self.chunks: list[LogChunkIn] = []
        self.lock = threading.Lock()
        self.fail_first = fail_first

    def __call__(self, batch: list[LogChunkIn]) -> None:
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                raise ConnectionError("control plane away")
            self.chunks.extend(batch)

    def text(self) -> str:
        return "".join(c.data for c in self.chunks)


def test_output_is_masked_numbered_and_attributed_to_steps():
    sink = Collector()
    shipper = LogShipper(sink, SecretMasker(["s3cr3t"]), interval_s=0.01)
    shipper.set_step(0)
    shipper.write(b"token=s3c")
    shipper.write(b"r3t done\n")
    shipper.set_step(1)
    shipper.write(b"second\n")
    shipper.line("kiln: the end")
    shipper.close()
    assert sink.text() == "token=*** done\nsecond\nkiln: the end\n"
    assert [c.seq for c in sink.chunks] == sorted(c.seq for c in sink.chunks)
    assert len({c.seq for c in sink.chunks}) == len(sink.chunks)
    assert {c.step_index for c in sink.chunks if "second" in c.data} == {1}
    assert {c.step_index for c in sink.chunks if "kiln: the end" in c.data} == {1}


def test_utf8_sequence_cut_between_reads_is_decoded_whole():
    sink = Collector()
    shipper = LogShipper(sink, SecretMasker([]), interval_s=0.01)
    encoded = "héllo ✓\n".encode()
    for i in range(len(encoded)):
        shipper.write(encoded[i : i + 1])
    shipper.close()
    assert sink.text() == "héllo ✓\n"


def test_send_failures_are_recorded_not_raised():
    sink = Collector(fail_first=1)
    shipper = LogShipper(sink, SecretMasker([]), interval_s=0.01)
    shipper.write(b"lost\n")
    shipper.close()
    assert len(shipper.send_errors) == 1
