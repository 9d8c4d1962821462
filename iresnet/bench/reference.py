"""The protocol's reference numbers: the public Residual Flows implementation, same protocol, 2-core CPU."""

REFERENCE = {
    "source": "public Residual Flows implementation (Chen et al. 2019), mnist5k-bench protocol, 2-core CPU",
    "train_images_per_s": 34.0,
    "eval_seconds_1000_images": 124.0,
    "invert_64_images_seconds": 3.0,
    "invert_64_images_max_abs_error": 7e-5,
    "peak_rss_mib": 1.9 * 1024,
    "epochs": 5,
    "steps": 312,
    "test_bpd_raw": 1.92,
    "test_bpd_ema": 2.55,
    "ema": "plain 0.999 (no warm-up)",
    "inversion_raw_max_abs_error": 1.4e-2,
}
