"""Timing of the cached evaluation and the bootstrap (not a test; the numbers quoted in
echotune/metrics/bootstrap.py). Run: OMP_NUM_THREADS=1 .venv/bin/python -m tests.metrics.bench_bootstrap"""

from __future__ import annotations

import time

from echotune.metrics import EvaluationSet, bootstrap_ci, paired_bootstrap
from tests.metrics.cases import video_case
from tests.metrics.reference import reference_coco


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    case = video_case(30, frames_per_video=10, dets_per_image=100, seed=0)  # 300 images, 1-2 GT each, 4 classes

    def build() -> EvaluationSet:
        return EvaluationSet.build(
            case.predictions, case.targets, case.view_logits, case.view_targets, 4, 3, case.groups
        )

    es = build()
    conf = es.detection().conf
    kept = sum(len(cm.scores) for cm in es.matches.classes)
    print(f"{es.n_images} images, {es.n_groups} videos, {kept} detections (best of 3, seconds)")
    print(f"EvaluationSet.build (pycocotools matching, once): {best_of(build):.2f}")
    plain = best_of(lambda: reference_coco(case.predictions, case.targets, 4))
    print(f"plain COCOeval evaluate + accumulate, one evaluation: {plain:.2f}")
    print(f"bootstrap_ci, 1000 resamples: {best_of(lambda: bootstrap_ci(es, conf, n_resamples=1000)):.2f}")
    paired = best_of(lambda: paired_bootstrap(es, es, conf, conf, n_resamples=1000))
    print(f"paired_bootstrap, 1000 resamples: {paired:.2f}")


if __name__ == "__main__":
    main()
