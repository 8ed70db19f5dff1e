"""Generate the C kernels described by table.yaml (uses PyYAML and Jinja2 from PyPI).

    python gen.py table.yaml build/gen

Writes kernel_NN.c, kernels.h and objects.mk (the object list make includes). The output depends
only on the inputs: the same table gives the same bytes.
"""

import math
import sys
from pathlib import Path

import jinja2
import yaml


def main(spec_path: str, out_dir: str) -> None:
    spec = yaml.safe_load(Path(spec_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader("templates"), keep_trailing_newline=True)
    kernel = env.get_template("kernel.c.j2")
    names = []
    for k in range(spec["kernels"]):
        name = f"kernel_{k:02d}"
        table = [round(math.sin((i + 1) * (k + 1) / spec["table_size"]), 12) for i in range(spec["table_size"])]
        taps = [round(1.0 / (t + k + 1), 12) for t in range(spec["taps"])]
        (out / f"{name}.c").write_text(kernel.render(name=name, table=table, taps=taps))
        names.append(name)
    (out / "kernels.h").write_text(
        "".join(f"double {n}(unsigned rounds);\n" for n in names)
        + "static double (*const KERNELS[])(unsigned) = {"
        + ", ".join(names)
        + "};\n"
    )
    # Last: make re-reads this file, so the sources it lists exist once it does.
    (out / "objects.mk").write_text("KERNEL_OBJS := " + " ".join(f"build/{n}.o" for n in names) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
