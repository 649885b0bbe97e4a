"""Single-run cost: dropout-lab vs. a hand-written PyTorch loop vs. the book's DataLoader path.

The same chapter training (concise 784-256-256-10 MLP, p = 0.5/0.5, batch 256, SGD lr 0.1, one seed,
50k train / 10k validation split, validation every epoch, test once at the end) is run three ways:

  a  dropout-lab as users run it: ``train(compose_train_config([...]), out_dir)``
  b  a hand-written PyTorch loop over the same in-memory tensors and index-slice batches
  c  the book's data path, as ``d2l.FashionMNIST(batch_size=256)`` builds it: torchvision's
     ``FashionMNIST`` with the per-sample ``Compose([Resize((28, 28)), ToTensor()])`` through a
     shuffling ``DataLoader(batch_size=256, num_workers=4)`` (d2l's defaults), for training,
     validation and test, with b's hand-written loop
  d  (when the ``d2l`` package is installed: ``make bench`` installs it) the book's own code: the
     chapter's concise ``DropoutMLP(d2l.Classifier)``, ``d2l.FashionMNIST(batch_size=256)`` and
     ``d2l.Trainer(max_epochs=10)``, which trains on all 60k images, validates on the test set
     every epoch and plots its progress board (here without a notebook to draw into)
  m  a with the activation monitor on (``monitor.enabled=true``, its default every 50 steps):
     m/a is the monitor's own overhead
  s  a with ``model=scratch``: the chapter's from-scratch dropout, whose masks compare uniform
     draws with p (``torch.rand_like(h) > p``) instead of ``nn.Dropout``'s Bernoulli sampler

Each variant runs at every ``--threads`` setting (default: 1 torch thread, what a study worker
uses with ``--jobs 2`` on two cores, and 0 = torch's default, one per core, what a single
``dropout-lab train`` uses); every setting gets its own table.

Every variant runs in a fresh subprocess, so its peak RSS (``ru_maxrss``, read in the child) is its
own, and the variants alternate (a, b, c, a, b, c, ...) so that background load hits them alike.
The timed span starts after the imports and ends with the test accuracy: it includes reading the
data (and, for a, composing the config, building the Trainer and writing ``run.json``).

    python benchmarks/bench_train.py --readme benchmarks/README.md   # 10 epochs, 3 repetitions, writes its section
    python benchmarks/bench_train.py --epochs 1 --repeats 1 --train-subset 2000 --threads 1   # prints it only
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ("a", "b", "c", "d", "m", "s")
LABELS = {
    "a": "dropout-lab train()",
    "b": "hand-written loop, in-memory tensors",
    "c": "book: FashionMNIST+Resize+ToTensor+DataLoader",
    "d": "book's own code: d2l 1.0.3 Trainer",
    "m": "a + activation monitor (every 50 steps)",
    "s": "a with model=scratch (uniform-draw masks)",
}
RATIOS = (("a", "b"), ("c", "a"), ("d", "a"), ("m", "a"), ("s", "a"))
TARGETS = {"a/b": "<= 1.10", "c/a": ">= 6", "d/a": "none (the source of the c/a target)",
           "m/a": "none (the monitor's overhead)", "s/a": "none"}
BEGIN, END = "<!-- bench_train:begin -->", "<!-- bench_train:end -->"
VAL_SIZE, SPLIT_SEED, BATCH, EVAL_BATCH, LR, P = 10_000, 0, 256, 2000, 0.1, 0.5


# ----------------------------------------------------------------------------------------------
# The three variants (each runs in its own child process).
# ----------------------------------------------------------------------------------------------

def _book_net():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(P),
                         nn.Linear(256, 256), nn.ReLU(), nn.Dropout(P), nn.Linear(256, 10))


def _evaluate(net, batches) -> tuple[float, float]:
    """Mean loss and accuracy over ``batches`` with dropout off (weighted by batch size)."""
    import torch
    import torch.nn.functional as F

    net.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    n = 0
    with torch.no_grad():
        for X, y in batches:
            logits = net(X)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
    net.train()
    return loss_sum.item() / n, correct.item() / n


def _fit(net, train_batches, val_batches, test_batches, epochs: int) -> dict:
    """The hand-written loop shared by b and c: SGD, per-epoch train loss and validation, final test."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(net.parameters(), lr=LR)
    curves = []
    net.train()
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        loss_sum, n = torch.zeros(()), 0
        for X, y in train_batches():
            loss = F.cross_entropy(net(X), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            n += len(y)
        val_loss, val_acc = _evaluate(net, val_batches())
        curves.append({"epoch": epoch + 1, "train_loss": loss_sum.item() / n, "val_loss": val_loss,
                       "val_acc": val_acc, "seconds": time.perf_counter() - epoch_start})
    test_loss, test_acc = _evaluate(net, test_batches())
    return {"curves": curves, "test_loss": test_loss, "test_acc": test_acc}


def _run_dropout_lab(args: argparse.Namespace, *extra: str) -> dict:
    from dropout_lab.config.compose import compose_train_config
    from dropout_lab.training.fit import train

    overrides = [f"trainer.max_epochs={args.epochs}", f"seed={args.seed}", f"data.root={args.data_root}",
                 "trainer=cpu", f"threads={args.threads or 'null'}", *extra]
    if args.train_subset:
        overrides.append(f"data.train_subset={args.train_subset}")
    with tempfile.TemporaryDirectory() as out:
        overrides.append(f"results_dir={out}")
        start = time.perf_counter()
        record = train(compose_train_config(overrides), Path(out) / "run", overrides)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "test_acc": record.final["test_acc"], "curves": record.curves,
            "n_train": args.train_subset or 60_000 - VAL_SIZE, "monitor_rows": len(record.activations)}


def run_a(args: argparse.Namespace) -> dict:
    return _run_dropout_lab(args)


def run_m(args: argparse.Namespace) -> dict:
    return _run_dropout_lab(args, "monitor.enabled=true")


def run_s(args: argparse.Namespace) -> dict:
    return _run_dropout_lab(args, "model=scratch")


def run_b(args: argparse.Namespace) -> dict:
    import torch
    from torchvision.datasets import FashionMNIST

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    net = _book_net()
    tr, te = FashionMNIST(args.data_root, train=True), FashionMNIST(args.data_root, train=False)
    X_all = tr.data.unsqueeze(1).float().div_(255)
    order = torch.randperm(len(X_all), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[:VAL_SIZE], order[VAL_SIZE:][: args.train_subset]
    X, y = X_all[train_idx], tr.targets[train_idx]
    Xv, yv = X_all[val_idx], tr.targets[val_idx]
    Xt, yt = te.data.unsqueeze(1).float().div_(255), te.targets
    del X_all
    shuffle = torch.Generator().manual_seed(0)

    def train_batches():
        perm = torch.randperm(len(y), generator=shuffle)
        for i in range(0, len(y), BATCH):
            idx = perm[i:i + BATCH]
            yield X[idx], y[idx]

    def slices(A, b):
        return lambda: ((A[i:i + EVAL_BATCH], b[i:i + EVAL_BATCH]) for i in range(0, len(b), EVAL_BATCH))

    out = _fit(net, train_batches, slices(Xv, yv), slices(Xt, yt), args.epochs)
    return {**out, "wall_s": time.perf_counter() - start, "n_train": len(y)}


def run_c(args: argparse.Namespace) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    net = _book_net()
    # d2l.FashionMNIST's per-sample transform (resize=(28, 28) is its default).
    book_transform = transforms.Compose([transforms.Resize((28, 28)), transforms.ToTensor()])
    train_full = FashionMNIST(args.data_root, train=True, transform=book_transform)
    test = FashionMNIST(args.data_root, train=False, transform=book_transform)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_idx = order[VAL_SIZE:][: args.train_subset].tolist()
    train_ds, val_ds = Subset(train_full, train_idx), Subset(train_full, order[:VAL_SIZE].tolist())

    def loader(ds, shuffle):
        return lambda: DataLoader(ds, batch_size=BATCH, shuffle=shuffle, num_workers=args.workers)

    out = _fit(net, loader(train_ds, True), loader(val_ds, False), loader(test, False), args.epochs)
    return {**out, "wall_s": time.perf_counter() - start, "n_train": len(train_ds)}


def run_d(args: argparse.Namespace) -> dict:
    """The chapter's own concise implementation, run with the d2l package as the book runs it."""
    import torch
    from d2l import torch as d2l
    from torch import nn

    class DropoutMLP(d2l.Classifier):  # the chapter's concise model (d2l 5.6.4)
        def __init__(self, num_outputs, num_hiddens_1, num_hiddens_2, dropout_1, dropout_2, lr):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Flatten(), nn.LazyLinear(num_hiddens_1), nn.ReLU(), nn.Dropout(dropout_1),
                nn.LazyLinear(num_hiddens_2), nn.ReLU(), nn.Dropout(dropout_2), nn.LazyLinear(num_outputs))

    with tempfile.TemporaryDirectory() as tmp:  # d2l reads ../data: point it at our copy of the files
        (Path(tmp) / "data").symlink_to(Path(args.data_root).resolve())
        (Path(tmp) / "cwd").mkdir()
        os.chdir(Path(tmp) / "cwd")
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model = DropoutMLP(num_outputs=10, num_hiddens_1=256, num_hiddens_2=256, dropout_1=P, dropout_2=P, lr=LR)
        data = d2l.FashionMNIST(batch_size=BATCH)
        trainer = d2l.Trainer(max_epochs=args.epochs)
        trainer.fit(model, data)
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for X, y in data.val_dataloader():  # d2l's validation set is the test set
                correct += int((model(X).argmax(1) == y).sum())
                n += len(y)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "test_acc": correct / n, "curves": [], "n_train": len(data.train)}


def _vm_kib(pid: int | str, field: str) -> int:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of a process in KiB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PeriodicSampler:
    """Calls ``sample()`` every ``interval`` seconds in a daemon thread while the ``with`` block runs.

    ``sample()`` returns False to stop early.
    """

    interval = 0.05

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.sample() is False:
                return

    def sample(self) -> bool | None:
        raise NotImplementedError

    def __enter__(self):  # returns the subclass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ChildPeaks(PeriodicSampler):
    """Samples the peak RSS (``VmHWM``) of this process's children (DataLoader workers) every 50 ms.

    ``RUSAGE_CHILDREN`` cannot be used: ``import torch`` itself forks a short-lived helper whose
    RSS (copied from the parent's pages) would hide the workers'.
    """

    def __init__(self) -> None:
        super().__init__()
        self.peak_kib = 0

    def sample(self) -> bool | None:
        me = os.getpid()
        try:
            kids = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        except OSError:
            return False
        for kid in kids:
            self.peak_kib = max(self.peak_kib, _vm_kib(kid, "VmHWM"))
        return None


def child(args: argparse.Namespace) -> None:
    import torch

    (args.threads,) = args.threads  # one setting per child
    if args.threads:
        torch.set_num_threads(args.threads)
    run = {"a": run_a, "b": run_b, "c": run_c, "d": run_d, "m": run_m, "s": run_s}[args.child]
    if args.child == "d":
        import matplotlib

        matplotlib.use("Agg")
        from d2l import torch as _d2l  # noqa: F401 - preloaded: its import time stays outside the timing
    elif args.child in "ams":  # import what train() needs before the clock starts, as b and c do
        import dropout_lab.data.datamodule
        import dropout_lab.models
        import dropout_lab.training  # noqa: F401 - preloaded: import time stays outside the timing
    else:
        import torchvision.datasets  # noqa: F401 - preloaded: import time stays outside the timing
    rss_imports = _vm_kib("self", "VmRSS") / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with ChildPeaks() as kids:
        result = run(args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    result["threads"] = torch.get_num_threads()
    result["rss_imports_mib"] = rss_imports
    result["rss_mib"] = after.ru_maxrss / 1024  # KiB on Linux
    result["workers_rss_mib"] = kids.peak_kib / 1024
    result["samples_per_s"] = result["n_train"] * args.epochs / result["wall_s"]
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# The driver: alternate the variants in fresh subprocesses, summarise, write the README section.
# ----------------------------------------------------------------------------------------------

def machine_info() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "torch_default_threads": torch.get_num_threads()}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_child(variant: str, args: argparse.Namespace, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--epochs", str(args.epochs),
           "--seed", str(args.seed), "--threads", str(threads), "--workers", str(args.workers),
           "--data-root", args.data_root]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    process_s = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"variant {variant} failed with status {proc.returncode}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = process_s
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarise(runs: dict[str, list[dict]]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Medians per variant, and the medians of the per-repetition ratios (wall and CPU seconds)."""
    rows = []
    for v in VARIANTS:
        rs = runs[v]
        if not rs:
            continue
        row = {"variant": v, "label": LABELS[v], "n": len(rs),
               "wall_min": min(r["wall_s"] for r in rs), "wall_max": max(r["wall_s"] for r in rs)}
        for key in ("wall_s", "cpu_s", "process_s", "samples_per_s", "rss_imports_mib", "rss_mib",
                    "workers_rss_mib", "test_acc"):
            row[key] = median([r[key] for r in rs])
        seconds = [c["seconds"] for r in rs for c in r["curves"]]
        row["epoch_s"] = median(seconds) if seconds else float("nan")  # d2l's Trainer keeps no timings
        rows.append(row)
    ratios = {}
    for num, den in RATIOS:
        if runs[num] and runs[den]:
            pairs = list(zip(runs[num], runs[den]))
            ratios[f"{num}/{den}"] = {key: median([x[key] / y[key] for x, y in pairs]) for key in ("wall_s", "cpu_s")}
            ratios[f"{num}/{den}"]["epoch_s"] = (
                median([median([c["seconds"] for c in x["curves"]]) / median([c["seconds"] for c in y["curves"]])
                        for x, y in pairs]) if runs[num][0]["curves"] else float("nan"))
    return rows, ratios


def _num(value: float, fmt: str) -> str:
    return "-" if value != value else format(value, fmt)


def table(rows: list[dict]) -> str:
    lines = ["| variant | wall s | min-max | CPU s | process s | epoch s | train samples/s | RSS after imports MiB "
             "| peak RSS MiB | DataLoader workers' peak RSS MiB | test acc |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        workers = f"{r['workers_rss_mib']:.0f}" if r["variant"] in ("c", "d") else "-"
        lines.append(f"| {r['variant']}: {r['label']} | {r['wall_s']:.2f} | {r['wall_min']:.2f}-{r['wall_max']:.2f} "
                     f"| {r['cpu_s']:.2f} | {r['process_s']:.2f} | {_num(r['epoch_s'], '.3f')} "
                     f"| {r['samples_per_s']:,.0f} | {r['rss_imports_mib']:.0f} | {r['rss_mib']:.0f} | {workers} "
                     f"| {r['test_acc']:.4f} |")
    return "\n".join(lines)


INTRO = """# Benchmarks

Speed measurements of dropout-lab against plain PyTorch. `make bench` reruns the scripts at full
budget with `--readme benchmarks/README.md` and rewrites the generated sections below (between the
`bench_*` markers); text outside the markers is kept.

* `bench_train.py`: one chapter run three ways (dropout-lab, a hand-written loop over the same
  in-memory tensors, the book's `FashionMNIST` + `ToTensor` + `DataLoader` path), alternating,
  each in a fresh subprocess.
* `bench_sweep.py`: sweep throughput (a 16-run grid with 1 vs 2 local workers), a tuning study
  with pruning on vs off, peak RSS per worker and RSS growth over runs in one process.
"""


NOT_WRITTEN = "not written to any README (pass --readme benchmarks/README.md)"


def add_readme_option(parser: argparse.ArgumentParser) -> None:
    """``--readme PATH``: the only way a benchmark writes its section; without it the section goes to stdout."""
    parser.add_argument("--readme", type=Path, default=None,
                        help="write this script's section into PATH (make bench: benchmarks/README.md); "
                             "default: print it and write no file")


def publish_section(readme: Path | None, begin: str, end: str, body: str, *, printed: bool = False) -> None:
    """Write the section into ``readme`` when one was given, else print it (unless ``printed``) and say so."""
    if readme is None:
        if not printed:
            print(body)
        print(NOT_WRITTEN)
        return
    write_section(readme, begin, end, body)
    print(f"wrote {readme}")


def write_section(readme: Path, begin: str, end: str, body: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``readme`` (append the section if absent)."""
    text = readme.read_text() if readme.exists() else INTRO
    section = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(text)


def threads_label(threads: int, info: dict) -> str:
    return (f"{threads} torch thread{'s' if threads > 1 else ''}" if threads
            else f"torch's default threads ({info['torch_default_threads']})")


def ratio_line(ratios: dict[str, dict[str, float]]) -> str:
    """The ratios in bold with their targets, as the README states them."""
    parts = []
    for name, r in ratios.items():
        detail = f"{r['cpu_s']:.3f} CPU" + (f", {r['epoch_s']:.3f} per epoch" if r["epoch_s"] == r["epoch_s"] else "")
        target = TARGETS[name]
        parts.append(f"**{name} = {r['wall_s']:.3f}** wall ({detail})"
                     + (f", target {target}" if not target.startswith("none") else ""))
    return "; ".join(parts) + ". Medians of the per-repetition ratios."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of every variant, medians over them")
    parser.add_argument("--train-subset", type=int, default=None, help="first N training images (smoke budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                        help="torch threads per run, one table per setting (0: torch's default); default: 1 0")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of variant c (d2l's default: 4)")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", str(ROOT / "data")))
    add_readme_option(parser)
    parser.add_argument("--variants", default="abcdms" if importlib.util.find_spec("d2l") else "abcms",
                        help="which variants to run (default: abcms, and d when the d2l package is installed)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}")

    from dropout_lab.data.files import ensure_fashion_mnist

    ensure_fashion_mnist(args.data_root, download=False)
    info = machine_info()
    load_start, started = load_average(), dt.datetime.now(dt.UTC)
    print(f"bench_train: {args.epochs} epoch(s), {args.repeats} repetition(s), train subset "
          f"{args.train_subset or 'all 50k'}, threads {args.threads} (0: torch default), "
          f"DataLoader workers {args.workers}; load average {load_start}", flush=True)
    runs = {t: {v: [] for v in VARIANTS} for t in args.threads}
    for rep in range(args.repeats):
        for threads in args.threads:
            for v in args.variants:
                r = run_child(v, args, threads)
                runs[threads][v].append(r)
                print(f"  rep {rep + 1} threads {threads} {v} ({LABELS[v]}): wall {r['wall_s']:.2f} s "
                      f"(CPU {r['cpu_s']:.2f} s), {r['samples_per_s']:,.0f} samples/s, "
                      f"peak RSS {r['rss_mib']:.0f} MiB, test_acc {r['test_acc']:.4f}", flush=True)
    load_end = load_average()
    if "d" not in args.variants:
        print("d skipped: the d2l package is not installed (make bench installs it)")

    sections, same_all = [], []
    for threads in args.threads:
        rows, ratios = summarise(runs[threads])
        label = threads_label(threads, info)
        print(f"\n{label}:")
        for r in rows:
            print(f"{r['variant']}: {r['label']}: wall {r['wall_s']:.2f} s (CPU {r['cpu_s']:.2f} s), "
                  f"{r['samples_per_s']:,.0f} samples/s, peak RSS {r['rss_mib']:.0f} MiB, test_acc {r['test_acc']:.4f}")
        for name, ratio in ratios.items():
            print(f"ratio {name} = {ratio['wall_s']:.3f} wall, {ratio['cpu_s']:.3f} CPU, "
                  f"{_num(ratio['epoch_s'], '.3f')} per epoch (target {TARGETS[name]})")
        if runs[threads]["a"] and runs[threads]["b"]:
            a_run, b_run = runs[threads]["a"][0], runs[threads]["b"][0]
            same = (all(abs(x[k] - y[k]) <= 1e-5 for x, y in zip(a_run["curves"], b_run["curves"])
                        for k in ("train_loss", "val_loss", "val_acc"))
                    and abs(a_run["test_acc"] - b_run["test_acc"]) <= 1e-5)
            same_all.append(same)
            print(f"a and b give the same curves and test accuracy: {same}")
        if runs[threads]["m"]:
            print(f"m recorded {runs[threads]['m'][0]['monitor_rows']} activation rows")
        sections += [f"### {label}", "", table(rows), "", ratio_line(ratios), ""]
    print(f"load average: start {load_start}, end {load_end}")
    if not set("abc") <= set(args.variants):
        return

    busy = float(load_start.split()[0]) > 0.5 * (info["cores"] or 1)
    body = "\n".join([
        "## Single run: dropout-lab vs. hand-written loop vs. the book's DataLoader",
        "",
        f"Generated by `python benchmarks/bench_train.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"on {started:%Y-%m-%d %H:%M} UTC: {args.epochs} epoch(s) of the chapter run (concise MLP, p = 0.5/0.5, "
        f"batch 256, SGD lr 0.1, seed {args.seed}) on {args.train_subset or 50_000} training images, validation "
        f"on 10k every epoch, test on 10k at the end; {args.repeats} interleaved repetition(s) of "
        f"{', '.join(args.variants)} at each thread setting, each in a fresh subprocess; medians.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, torch {info['torch']}, "
        f"DataLoader workers (c) {args.workers}. Load average (1/5/15 min) at start {load_start}, at end {load_end}"
        + (" (above half the cores at the start: the average lags by minutes, so it may be an earlier run; "
           "if other jobs are running, wall times are noisy, CPU seconds less so)" if busy else "")
        + ".",
        "",
        *sections,
        "* *wall s*: from after the imports to the test accuracy, data reading included (for a, m, s also "
        "composing the config, building the Trainer, verifying the files' MD5 and writing `run.json`). *CPU s*: "
        "user + system time of the variant's process over the same span (c's DataLoader workers not included). "
        "*process s*: the whole subprocess, interpreter start and imports included. *epoch s*: median "
        "seconds of one epoch (training + validation; a: `run.json`'s `curves[].seconds`), i.e. without the "
        "one-off costs of a run.",
        "* *train samples/s*: training images x epochs / wall s. *peak RSS*: `ru_maxrss` of the variant's "
        "process; *RSS after imports* is its part that is only `import torch` (+ Lightning for a, m, s). "
        "For c, the largest DataLoader worker's peak (`VmHWM`, sampled).",
        f"* a and b draw the same initial weights, split, batch order and dropout masks, and give the same "
        f"per-epoch curves and test accuracy (within float32 rounding, 1e-5): {'yes' if all(same_all) else 'no'}. "
        "c has the same initial weights and split, but the DataLoader shuffles with another random stream, "
        "so its test accuracy is another draw of the same training (seeds vary by a few points here). "
        "c validates and tests through DataLoaders too, at the book's batch size 256 (a and b: 2000)."
        + (" d trains on all 60k images and validates on the 10k test images every epoch, as the book does "
           "(its samples/s counts 60k per epoch); its *CPU s* and *DataLoader workers' peak RSS* are those of "
           "its main process and largest worker, like c's." if "d" in args.variants else "")
        + (" m trains exactly as a (the monitor's noisy probe pass uses a forked RNG) and adds its "
           "recording; s draws other masks, so its accuracy is another draw."
           if set("ms") & set(args.variants) else ""),
    ])
    publish_section(args.readme, BEGIN, END, body)


if __name__ == "__main__":
    main()
