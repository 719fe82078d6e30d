"""Sharded scoring on several processes (tuco_kernels/dataset/): scaling, host memory, merge.

    python bench/distributed.py                    # all three parts (CPU: about 3 minutes on 2 cores)
    python bench/distributed.py --part scaling     # prompts/s, 1 process vs 2 (torchrun), same prompts
    python bench/distributed.py --part memory      # host memory of 2 ranks: resident vs offload="disk" vs "cpu"
    python bench/distributed.py --part merge       # merging 1M synthetic rows

scaling: a Llama-shaped pair built from a config (random weights, saved as safetensors) scores the same
pre-tokenized prompts (32-256 tokens) with ``tuco score --out DIR/``'s code path (``tk.score_dataset``) in
shards of ``--shard-tokens`` (≥ 64k), once on 1 process and once under torchrun on N (CPU: each process one
thread, so 2 processes use the 2 cores one process of one thread leaves idle; GPU: one GPU each). Throughput
is real tokens (and prompts) per second from rank 0's first claim to the last shard written ("scoring"), and
end to end (process start to exit: imports, loading, tokenizing, merging); scaling efficiency = N-process
throughput / (N × 1-process throughput).

memory: the same 2-rank run with a bigger pair (d=1024, 8 layers, ~0.8 GB fp32 for both models), each rank's
peak resident memory (VmHWM) and its anonymous / file-backed parts at the end, and how much of the model files
sits in the page cache (mincore), which the ranks share.

merge: 1M rows in 250 shards shaped like ``tuco score --layers`` rows of an 18-layer model, merged into
scores.parquet in input order.

Rows go to bench/results/distributed_{scaling,memory,merge}.csv with device, versions and date.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, provenance, random_model, target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- helpers


def llama(hidden: int, layers: int, inter: int, heads: int = 4, vocab: int = 512):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024)


def save_pair(config, root: Path) -> None:
    import torch

    for name, seed in (("pt", 0), ("ft", 1)):
        random_model(config, torch.float32, "cpu", seed=seed).save_pretrained(root / name)


def write_prompts(path: Path, n: int, vocab: int, seed: int = 0, lo: int = 32, hi: int = 256) -> int:
    rng = np.random.default_rng(seed)
    tokens = 0
    with open(path, "w") as f:
        for i in range(n):
            ids = rng.integers(3, vocab, size=int(rng.integers(lo, hi + 1))).tolist()
            tokens += len(ids)
            f.write(json.dumps({"id": i, "input_ids": ids}) + "\n")
    return tokens


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def page_cache_bytes(files: list[Path]) -> int:
    """Bytes of ``files`` resident in the page cache: mincore over a private mapping (nothing is read)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for file in files:
        size = file.stat().st_size
        if not size:
            continue
        with open(file, "rb") as f:
            m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
            try:
                head = ctypes.c_char.from_buffer(m)
                vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
                rc = libc.mincore(ctypes.addressof(head), size, vec)
                del head
                if rc != 0:
                    raise OSError(ctypes.get_errno(), "mincore failed")
                total += int(np.frombuffer(vec, dtype=np.uint8).__and__(1).sum()) * page
            finally:
                m.close()
    return total


# ------------------------------------------------------------------------------------------------ worker


def worker(spec: dict) -> None:
    """One rank (or the single process): load, score_dataset, report timings and memory as JSON."""
    import torch

    import tuco_kernels as tk
    from tuco_kernels.dataset import connect, device_for_rank, dist_env
    from tuco_kernels.prompts.records import read_prompt_file

    t_start = spec["t_launch"]
    torch.set_num_threads(spec["threads"])
    env = dist_env()
    coord = connect(env, timeout=120)
    try:
        device = device_for_rank(spec["device"], env)
        root = Path(spec["models"])
        pair = tk.load_pair(root / "pt", root / "ft", device=device, offload=spec["offload"])
        t_loaded, cpu0 = time.time(), time.process_time()
        run = tk.score_dataset(pair, read_prompt_file(spec["prompts"]), spec["out"], batch_tokens=spec["batch_tokens"],
                               shard_tokens=spec["shard_tokens"], coordinator=coord, schedule=spec.get("schedule"))
        cpu_s = time.process_time() - cpu0
        pair.close()
    finally:
        coord.close()
    report = {"rank": env.rank, "world_size": env.world_size, "scored_shards": len(run.scored), "cpu_s": cpu_s,
              "load_s": t_loaded - t_start, "end_to_end_s": time.time() - t_start,
              "vm_hwm_mib": status_kib("VmHWM") / 1024, "rss_anon_mib": status_kib("RssAnon") / 1024,
              "rss_file_mib": status_kib("RssFile") / 1024}
    Path(f"{spec['report']}.{env.rank}").write_text(json.dumps(report))


def launch(spec: dict, nproc: int, tmp: Path, tag: str) -> tuple[list[dict], dict]:
    """Run the worker on ``nproc`` processes (torchrun when > 1); the ranks' reports and rank 0's _SUCCESS."""
    spec = dict(spec, out=str(tmp / f"out-{tag}"), report=str(tmp / f"report-{tag}"), t_launch=time.time())
    shutil.rmtree(spec["out"], ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    me = [str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *me]
           if nproc > 1 else [sys.executable, *me])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{done.stderr[-4000:]}")
    reports = [json.loads(Path(f"{spec['report']}.{r}").read_text()) for r in range(nproc)]
    success = json.loads((Path(spec["out"]) / "_SUCCESS").read_text())
    padded = {s["k"]: s["padded_tokens"] for s in json.loads((Path(spec["out"]) / "plan.json").read_text())["shards"]}
    for p in sorted((Path(spec["out"]) / "shards").glob("*.parquet")):  # each rank's share of the work
        meta = json.loads(pq.read_schema(p).metadata[b"tuco_shard"])
        r = reports[meta["rank"]]
        r["tokens"] = r.get("tokens", 0) + int(pq.read_table(p, columns=["n_tokens"])["n_tokens"].to_numpy().sum())
        r["padded"] = r.get("padded", 0) + padded[meta["k"]]
    return reports, success


# ----------------------------------------------------------------------------------------------- parts


def part_scaling(args, tmp: Path) -> list[dict]:
    import torch

    device = args.device
    gpu = device.startswith("cuda")
    nproc = args.nproc or (min(2, torch.cuda.device_count()) if gpu else 2)
    config = llama(*((1024, 8, 2752, 16) if gpu else (args.hidden, args.layers, args.hidden * 2, 4)))
    models = tmp / "scaling-models"
    save_pair(config, models)
    prompts = tmp / "scaling.jsonl"
    tokens = write_prompts(prompts, args.prompts, config.vocab_size)
    spec = dict(models=str(models), prompts=str(prompts), device=device, offload="none", threads=1,
                batch_tokens=args.batch_tokens, shard_tokens=args.shard_tokens)
    results = {}
    for n in (1, nproc):
        reports, success = launch(spec, n, tmp, f"scaling-{n}")
        last = success["last_run"]
        results[n] = dict(scoring_s=last["scoring_seconds"], end_to_end_s=max(r["end_to_end_s"] for r in reports),
                          shards=success["n_shards"], per_rank=[r["scored_shards"] for r in reports],
                          tokens_per_cpu_s=sum(r.get("tokens", 0) for r in reports) / sum(r["cpu_s"] for r in reports),
                          cores_used=sum(r["cpu_s"] for r in reports) / last["scoring_seconds"],
                          balance=sum(r.get("padded", 0) for r in reports) / (n * max(r.get("padded", 0) for r in reports)))
        print(f"{n} process(es): {results[n]['shards']} shards of ≤{args.shard_tokens} tokens, scoring "
              f"{last['scoring_seconds']:.1f} s ({tokens / last['scoring_seconds']:,.0f} tokens/s, "
              f"{args.prompts / last['scoring_seconds']:.1f} prompts/s), end to end {results[n]['end_to_end_s']:.1f} s, "
              f"shards per rank {results[n]['per_rank']}, {results[n]['tokens_per_cpu_s']:,.0f} tokens per CPU "
              f"second, {results[n]['cores_used']:.2f} cores busy on average (load average "
              f"{os.getloadavg()[0]:.2f})", flush=True)
    one, many = results[1], results[nproc]
    eff = one["scoring_s"] / (nproc * many["scoring_s"])
    eff_e2e = one["end_to_end_s"] / (nproc * many["end_to_end_s"])
    target(f"scaling efficiency, {nproc} processes vs 1 (shards of {args.shard_tokens} tokens, scoring)", 100 * eff,
           "≥ 90 %", eff >= 0.9, "{:.1f} %")
    eff_cpu = many["tokens_per_cpu_s"] / one["tokens_per_cpu_s"]
    print(f"end to end (with start-up, loading, tokenizing, merge): {100 * eff_e2e:.1f} %; tokens per CPU second, "
          f"{nproc} processes vs 1: {100 * eff_cpu:.1f} % (what the machinery costs, apart from cores shared with "
          f"other work); balance of the ranks' padded tokens (the tail's bound on efficiency): {100 * many['balance']:.1f} %")
    prov = provenance(device)
    rows = []
    for n, r in results.items():
        rows.append(dict(prov, processes=n, threads_per_process=1, model=f"llama d={config.hidden_size} "
                         f"L={config.num_hidden_layers}", prompts=args.prompts, tokens=tokens,
                         shard_tokens=args.shard_tokens, batch_tokens=args.batch_tokens, shards=r["shards"],
                         shards_per_rank="/".join(map(str, r["per_rank"])), scoring_s=round(r["scoring_s"], 2),
                         prompts_per_s=round(args.prompts / r["scoring_s"], 2),
                         tokens_per_s=round(tokens / r["scoring_s"]), end_to_end_s=round(r["end_to_end_s"], 2),
                         efficiency=round(eff, 4) if n > 1 else "", efficiency_end_to_end=round(eff_e2e, 4) if n > 1 else "",
                         tokens_per_cpu_s=round(r["tokens_per_cpu_s"]), efficiency_cpu=round(eff_cpu, 4) if n > 1 else "",
                         balance=round(r["balance"], 4), cores_used=round(r["cores_used"], 3),
                         load_average=os.getloadavg()[0]))
    print(f"rows appended to {append_rows('distributed_scaling', rows)}")
    return rows


def part_memory(args, tmp: Path) -> list[dict]:
    config = llama(1024, 8, 2752, 16)
    models = tmp / "memory-models"
    save_pair(config, models)
    files = sorted(models.rglob("*.safetensors"))
    weights = sum(f.stat().st_size for f in files)
    prompts = tmp / "memory.jsonl"
    write_prompts(prompts, 64, config.vocab_size, lo=32, hi=64)
    prov = provenance("cpu")
    rows = []
    for offload in ("none", "disk", "cpu"):
        spec = dict(models=str(models), prompts=str(prompts), device="cpu", offload=offload, threads=1,
                    batch_tokens=512, shard_tokens=1024, schedule="layer" if offload != "none" else None)
        reports, _ = launch(spec, 2, tmp, f"memory-{offload}")
        cached = page_cache_bytes(files)
        total_private = sum(r["rss_anon_mib"] for r in reports)
        def per_rank(key):
            return ", ".join(f"{r[key]:.0f}" for r in reports)

        print(f"offload={offload}: per rank VmHWM {per_rank('vm_hwm_mib')} MiB (at the end: anonymous "
              f"{per_rank('rss_anon_mib')}, file-backed {per_rank('rss_file_mib')}); model files "
              f"{weights / 2**20:.0f} MiB, {cached / 2**20:.0f} MiB of them in the page cache", flush=True)
        for r in reports:
            rows.append(dict(prov, ranks=2, rank=r["rank"], offload=offload, model_files_mib=round(weights / 2**20),
                             vm_hwm_mib=round(r["vm_hwm_mib"]), rss_anon_mib=round(r["rss_anon_mib"]),
                             rss_file_mib=round(r["rss_file_mib"]), page_cache_mib=round(cached / 2**20),
                             ranks_private_total_mib=round(total_private)))
    print(f"rows appended to {append_rows('distributed_memory', rows)}")
    return rows


def part_merge(args, tmp: Path) -> list[dict]:
    import pyarrow as pa

    from tuco_kernels.dataset.layout import ROW, Layout
    from tuco_kernels.dataset.merge import merge_shards
    from tuco_kernels.dataset.scoring import write_shard

    n_rows, n_shards, n_layers = args.merge_rows, args.merge_shards, 18
    layout = Layout(tmp / "merge", n_shards)
    layout.make()
    rng = np.random.default_rng(0)
    order = rng.permutation(n_rows)  # shards hold rows in length order, not input order
    t0 = time.perf_counter()
    for k, rows in enumerate(np.array_split(order, n_shards)):
        m = len(rows)
        lists = {name: pa.FixedSizeListArray.from_arrays(pa.array(rng.random(m * n_layers)), n_layers).cast(
            pa.list_(pa.float64())) for name in ("ptc_l1", "ftc_l1", "beta")}
        tuco = rng.random(m)
        table = pa.table({"id": pa.array([f"prompt-{i}" for i in rows]), "tuco": tuco, "preco": 1 - tuco,
                          "n_tokens": rng.integers(5, 500, m), **lists, ROW: pa.array(rows, pa.int64())})
        write_shard(layout, k, table, {"k": k})
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    merge_shards(layout, n_shards, n_rows)
    seconds = time.perf_counter() - t0
    size = layout.scores().stat().st_size
    print(f"merge: {n_rows:,} rows from {n_shards} shards in {seconds:.1f} s ({size / 2**20:.0f} MiB Parquet; "
          f"making the shards took {made:.1f} s)")
    target(f"merge of {n_rows:,} rows", seconds, "< 60 s", seconds < 60, "{:.1f} s")
    extra = {}
    if args.merge_csv:
        t0 = time.perf_counter()
        merge_shards(layout, n_shards, n_rows, formats=("csv",))
        extra["with_csv_s"] = round(time.perf_counter() - t0, 2)
        print(f"merge with scores.csv too: {extra['with_csv_s']:.1f} s")
    row = dict(provenance("cpu"), rows=n_rows, shards=n_shards, layers=n_layers, merge_s=round(seconds, 2),
               parquet_mib=round(size / 2**20), **extra)
    print(f"rows appended to {append_rows('distributed_merge', [row])}")
    return [row]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", "scaling", "memory", "merge"), default="all")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--nproc", type=int, help="processes of the parallel run (default: 2, or the GPUs up to 2)")
    p.add_argument("--prompts", type=int, default=3200, help="scaling: prompts (32-256 tokens each; the default "
                                                           "makes 8 shards of 64k tokens)")
    p.add_argument("--hidden", type=int, default=128, help="scaling on CPU: hidden size")
    p.add_argument("--layers", type=int, default=4, help="scaling on CPU: layers")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--shard-tokens", type=int, default=65536)
    p.add_argument("--merge-rows", type=int, default=1_000_000)
    p.add_argument("--merge-shards", type=int, default=250)
    p.add_argument("--merge-csv", action="store_true", help="merge: also time writing scores.csv")
    p.add_argument("--keep", help="work in this directory and keep it (default: a temporary one)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tuco-bench-dist-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if args.part in ("all", "scaling"):
            part_scaling(args, tmp)
        if args.part in ("all", "memory"):
            part_memory(args, tmp)
        if args.part in ("all", "merge"):
            part_merge(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
