"""Hybrid ranking over the shipped demo catalog: MRR and R@1 per query class, before and after a change.

Why: the service's rules for text queries (fusion, exact matches, stopwords, floors, ITM re-ranking)
decide whether a shopper who types a SKU, a title or a brand finds that product first, and what an
emoji name or a paraphrase ("a puppy") finds. This replays those queries through `SearchService`
over the demo catalog indexed with the demo model (`blipsearch demo --no-serve --no-captions`),
exactly as the server answers them, and scores the ranks against the catalog's own fields.

Query classes (a seeded sample per class; relevant = what a person would accept):

* sku: an item's SKU ("NOTO-1F34E"), relevant: that item.
* title: an item's exact title ("Red apple (Noto)"), relevant: the items with that title.
* brand: each brand's name, as written and lower-cased, relevant: the items of that brand.
* name: an emoji's name ("red apple"), relevant: the items whose title names it.
* paraphrase: `train/paraphrases.py` ("a puppy"), relevant: the items of the accepted names.

Configurations: hybrid with ITM re-ranking (the server's default), hybrid without, keyword. The
re-rank depth is fixed (`--rerank-k`, default 8, the CPU default) and the safety deadline is out
of reach, so the machine's speed cannot change an order. `results` is the mean number of hits a
query lists (of at most `--k`): the relevance floor shows there.

Runs with whatever blipsearch the interpreter imports, so the same module measures two checkouts
(run it from each checkout's root):

    blipsearch demo --no-serve --no-captions --dir /tmp/demo        # index once (~2 minutes)
    python -m bench.hybrid_ranking --data /tmp/demo/data --label before  # the old checkout
    python -m bench.hybrid_ranking --data /tmp/demo/data --label after

Each run is merged into bench/results/hybrid-ranking-<machine>.json (by label) and the markdown
table beside it is rewritten from all labels. About four minutes on 2 shared CPU cores.

`--floors 0:0 0.5:0.2 ...` instead measures hybrid + ITM on the name and paraphrase classes under
each `vector_floor:keyword_floor` pair (k = 100), the calibration behind the floors' defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blipsearch.search.service as service_module
from bench.common import machine
from blipsearch.demo import demo_assets, demo_rerank_itc_weight
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.schema import Item, ItemStatus
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
CONFIGS: tuple[tuple[str, str, bool], ...] = (
    ("hybrid + ITM", "hybrid", True),
    ("hybrid", "hybrid", False),
    ("keyword", "keyword", False),
)
CLASSES = ("sku", "title", "brand", "name", "paraphrase")
_SUFFIX = re.compile(r"\s*\([^)]*\)\s*$")


def slug(info: dict[str, Any]) -> str:
    """The machine's short name (cpu words and cores), as the other bench reports name it."""
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", info["cpu"].lower())
    words = re.findall(r"[a-z0-9]+", name)[:3]
    gpu = "-" + "-".join(re.findall(r"[a-z0-9]+", info["gpu"].lower())[1:3]) if info.get("gpu") else ""
    return "-".join(words) + f"-{info['cores']}c" + gpu


def emoji_name(title: str | None) -> str:
    """ "Red apple (Noto)" -> "red apple": the name `train/paraphrases.py` accepts."""
    return _SUFFIX.sub("", title or "").strip().lower()


def build_queries(items: Sequence[Item], per_class: int, seed: int) -> list[tuple[str, str, set[int]]]:
    """(class, query, relevant item ids), a seeded sample of `per_class` per class."""
    rng = random.Random(seed)
    by_title: dict[str, set[int]] = defaultdict(set)
    by_brand: dict[str, set[int]] = defaultdict(set)
    by_name: dict[str, set[int]] = defaultdict(set)
    for item in items:
        if item.title:
            by_title[item.title].add(item.id)
            by_name[emoji_name(item.title)].add(item.id)
        if item.brand:
            by_brand[item.brand].add(item.id)
    with_sku = sorted((item for item in items if item.external_id), key=lambda item: item.id)
    queries: list[tuple[str, str, set[int]]] = []
    for item in rng.sample(with_sku, min(per_class, len(with_sku))):
        queries.append(("sku", str(item.external_id), {item.id}))
    for title in rng.sample(sorted(by_title), min(per_class, len(by_title))):
        queries.append(("title", title, by_title[title]))
    for brand in sorted(by_brand)[:per_class]:
        queries.append(("brand", brand, by_brand[brand]))
        if brand.lower() != brand:
            queries.append(("brand", brand.lower(), by_brand[brand]))
    for name in rng.sample(sorted(by_name), min(per_class, len(by_name))):
        queries.append(("name", name, by_name[name]))
    for query, accepted in PARAPHRASE_QUERIES:
        relevant = set().union(*(by_name.get(name, set()) for name in accepted))
        if relevant:
            queries.append(("paraphrase", query, relevant))
    return queries


def measure(
    service: SearchService, queries: list[tuple[str, str, set[int]]], k: int, rerank_k: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, mode, rerank in CONFIGS:
        per_class: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        started = time.perf_counter()
        for kind, query, relevant in queries:
            options = SearchOptions(k=k, mode=mode, rerank=rerank, rerank_k=rerank_k if rerank else None)  # type: ignore[arg-type]
            page = service.text_to_images(query, options)
            ids = [hit.item_id for hit in page.hits]
            rank = next((at for at, item_id in enumerate(ids, start=1) if item_id in relevant), None)
            per_class[kind].append((1.0 / rank if rank else 0.0, 1.0 if rank == 1 else 0.0, len(ids)))
        seconds = time.perf_counter() - started
        out[label] = {
            "seconds": round(seconds, 2),
            "classes": {
                kind: {
                    "queries": len(rows),
                    "mrr": round(sum(r[0] for r in rows) / len(rows), 4),
                    "r_at_1": round(sum(r[1] for r in rows) / len(rows), 4),
                    "results": round(sum(r[2] for r in rows) / len(rows), 1),
                }
                for kind in CLASSES
                if (rows := per_class.get(kind))
            },
        }
    return out


def render(report: dict[str, Any]) -> str:
    runs, info = report["runs"], report["machine"]
    lines = [
        f"# Hybrid ranking over the demo catalog: {info['cpu']}, {info['cores']} cores",
        "",
        "MRR and R@1 of the first relevant item, per query class; `results` = mean hits listed (of at most "
        f"k = {report['k']}). Demo model, demo catalog ({report['items']} items), re-rank depth fixed at "
        f"{report['rerank_k']}. Written by `bench/hybrid_ranking.py`; one section per code version (label).",
        "",
    ]
    for label, run in runs.items():
        lines += [
            f"## {label}: {run['code']} ({run['when']})",
            "",
            "| Configuration | Class | Queries | MRR | R@1 | results |",
            "|---|---|---|---|---|---|",
        ]
        for config, result in run["configs"].items():
            for kind, row in result["classes"].items():
                lines.append(
                    f"| {config} | {kind} | {row['queries']} | {row['mrr']:.3f} | {row['r_at_1'] * 100:.1f}% "
                    f"| {row['results']} |"
                )
        lines.append("")
    floors = report.get("floors")
    if floors:
        lines += [
            f"## Floors: hybrid + ITM, k = 100, {floors['code']} ({floors['when']})",
            "",
            "| vector_floor | keyword_floor | Class | MRR | R@1 | results |",
            "|---|---|---|---|---|---|",
        ]
        for row in floors["rows"]:
            for kind, cells in row["classes"].items():
                lines.append(
                    f"| {row['vector_floor']} | {row['keyword_floor']} | {kind} | {cells['mrr']:.3f} "
                    f"| {cells['r_at_1'] * 100:.1f}% | {cells['results']} |"
                )
        lines.append("")
    return "\n".join(lines)


def code_version(checkout: Path) -> str:
    """The commit the measured code is at (never a local path); "+changes" when not committed."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"commit {commit}" + (" +changes" if dirty else "") if commit else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hybrid_ranking",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="the demo's data directory (indexed)")
    parser.add_argument("--label", required=True, help="name of this run, e.g. before / after")
    parser.add_argument("--per-class", type=int, default=30, help="queries sampled per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=50, help="hits asked per query")
    parser.add_argument("--rerank-k", type=int, default=8, help="fixed ITM re-rank depth")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--floors", nargs="+", help="vector_floor:keyword_floor pairs to compare")
    args = parser.parse_args()
    if args.floors:
        sweep(args)
        return
    service = open_service(args.data)
    try:
        items = indexed_items(service)
        queries = build_queries(items, args.per_class, args.seed)
        configs = measure(service, queries, args.k, args.rerank_k)
    finally:
        service.close()
    path, report = load_report(args.out)
    report.update(k=args.k, rerank_k=args.rerank_k, items=len(items), seed=args.seed)
    report["runs"][args.label] = {
        "code": code_version(Path(service_module.__file__).resolve().parent.parent),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "configs": configs,
    }
    save_report(path, report)


def open_service(data: Path, **settings: Any) -> SearchService:
    assets = demo_assets(REPO / "demo")
    return SearchService.open(
        Settings(
            data_dir=data,
            retrieval_model=str(assets.retrieval),
            caption_model=str(assets.caption),
            rerank_itc_weight=demo_rerank_itc_weight(assets),
            device="cpu",
            offline=True,
            rerank_deadline_ms=600_000.0,  # the safety deadline must not cut a shortlist on a busy machine
            **settings,
        )
    )


def indexed_items(service: SearchService) -> list[Item]:
    from sqlalchemy import select

    with service.catalog.sessions() as session:
        items = list(session.scalars(select(Item).where(Item.status == ItemStatus.INDEXED.value)))
        session.expunge_all()
    return items


def load_report(out: Path) -> tuple[Path, dict[str, Any]]:
    info = machine()
    path = out / f"hybrid-ranking-{slug(info)}.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    report["machine"] = info
    return path, report


def save_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(render(report))
    print(render(report))


def sweep(args: argparse.Namespace) -> None:
    """hybrid + ITM on the name and paraphrase classes under each pair of floors."""
    global CONFIGS
    CONFIGS = (("hybrid + ITM", "hybrid", True),)
    rows = []
    for pair in args.floors:
        vector_floor, keyword_floor = (float(part) for part in pair.split(":"))
        service = open_service(args.data, vector_floor=vector_floor, keyword_floor=keyword_floor)
        try:
            queries = [
                q
                for q in build_queries(indexed_items(service), args.per_class, args.seed)
                if q[0] in ("name", "paraphrase")
            ]
            classes = measure(service, queries, 100, args.rerank_k)["hybrid + ITM"]["classes"]
        finally:
            service.close()
        rows.append({"vector_floor": vector_floor, "keyword_floor": keyword_floor, "classes": classes})
    path, report = load_report(args.out)
    report["floors"] = {
        "code": code_version(Path(service_module.__file__).resolve().parent.parent),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    save_report(path, report)


if __name__ == "__main__":
    main()
