"""Metrics summed across processes (training.metrics.distributed): two gloo processes give the results of one
process that saw all images."""

import json
import os

import torch.distributed as dist
import torch.multiprocessing as mp

from tests.training.metrics.helpers import METRICS, assert_results_close, filled


def _distributed_worker(rank, world_size, rendezvous, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        results = {}
        for name, (metric_cls, kwargs, cases) in METRICS.items():
            metric = filled(metric_cls, cases[rank::world_size], **kwargs)
            results[name] = metric.compute(per_class=True)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
            json.dump(results, file)
    finally:
        dist.destroy_process_group()


def test_metrics_are_reduced_across_two_gloo_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, (metric_cls, kwargs, cases) in METRICS.items():
            assert_results_close(results[name], filled(metric_cls, cases, **kwargs).compute(per_class=True))
