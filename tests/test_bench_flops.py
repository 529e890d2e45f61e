"""FLOPs formula on a hand-computable config, efficiency arithmetic and the peak lookup."""

import pytest

from polydistill.benchmarks.flops import attention_width, efficiency, encoder_flops
from polydistill.benchmarks.probe import peak_flops_per_s
from polydistill.benchmarks.rows import RowLabel, make_row
from polydistill.benchmarks.settings import Cell
from polydistill.benchmarks.variants import XLMR_BASE_ARCH, builtin_config

TINY = {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_labels": 3}


def test_flops_of_a_tiny_config_by_hand():
    # b=1, s=2, h=a=4, f=8, c=3, L=2
    # per layer: QKV 3*2*1*2*4*4 = 192; out proj 2*2*4*4 = 64; scores 2*1*2*2*4 = 32; context 32;
    #            FFN up + down 2 * 2*2*4*8 = 256      → 576 per layer, 1152 for two
    # head: 2*1*(4*4 + 4*3) = 56                        → 1208
    assert encoder_flops(TINY, batch=1, seq=2) == 1208
    # batch 3 multiplies everything by 3 (head included)
    assert encoder_flops(TINY, batch=3, seq=2) == 3 * 1208


def test_attention_is_quadratic_and_head_dim_is_respected():
    linear = encoder_flops(TINY, 1, 4) - encoder_flops({**TINY, "num_hidden_layers": 0}, 1, 4)
    # s=4: QKV+O 2*4*(16*4)=512, scores+context 4*16*4=256, FFN 2*2*4*32=512 → 1280 per layer
    assert linear == 2 * 1280
    assert attention_width({"hidden_size": 768, "num_attention_heads": 12}) == 768
    assert attention_width({"hidden_size": 768, "num_attention_heads": 6, "head_dim": 64}) == 384
    assert encoder_flops({**TINY, "id2label": {"0": "a", "1": "b"}}, 1, 2) == 1208 - 2 * 4  # 2 labels, not 3


def test_xlmr_base_at_128_tokens_is_about_22_gflop():
    flops = encoder_flops(builtin_config(XLMR_BASE_ARCH), batch=1, seq=128)
    # 12 × (603,979,776 + 50,331,648 + 1,207,959,552) + head 2*(768² + 768*7)
    assert flops == 12 * (603_979_776 + 50_331_648 + 1_207_959_552) + 2 * (768 * 768 + 768 * 7)
    assert flops / 1e9 == pytest.approx(22.35, abs=0.01)


def test_efficiency_arithmetic():
    # 2 GFLOP in 10 ms = 200 GFLOP/s, against a 400 GFLOP/s peak = 50%
    assert efficiency(2e9, 10.0, 400e9) == pytest.approx(0.5)
    assert efficiency(2e9, 10.0, None) is None
    assert efficiency(None, 10.0, 1e9) is None
    assert efficiency(2e9, 0.0, 1e9) is None


def test_peak_lookup_uses_the_best_probe_of_the_precision_and_thread_count():
    peaks = {
        "cpu": {
            "1": {"fp32": {"gflops": 40.0}, "int8": {"gflops": 2.0}, "int8-ort": {"gflops": 120.0}},
            "2": {"fp32": {"gflops": 80.0}, "bf16": {"unavailable": "no kernel"}},
        },
        "cuda": {"bf16": {"gflops": 700_000.0}, "float32_matmul_precision": "highest"},
    }
    assert peak_flops_per_s(peaks, "cpu", "fp32", 2) == pytest.approx(80e9)
    assert peak_flops_per_s(peaks, "cpu", "int8-dynamic", 1) == pytest.approx(120e9)
    assert peak_flops_per_s(peaks, "cpu", "bf16", 2) is None
    assert peak_flops_per_s(peaks, "cpu", "fp32", 4) is None
    assert peak_flops_per_s(peaks, "cuda", "bf16", 16) == pytest.approx(700e12)


def test_row_throughput_and_efficiency_from_fake_stats():
    stats = {"p50": 20.0, "p90": 25.0, "p99": 30.0, "mean": 21.0, "stdev": 2.0, "runs": 50, "settled": True}
    label = RowLabel("forward", "m", "student", "torch", "fp32", "cpu")
    row = make_row(label, Cell(batch=8, seq=16, threads=2), stats, flops=4e9, peak=400e9)
    assert row["throughput"] == pytest.approx(400.0)  # 8 sequences / 0.02 s
    assert row["efficiency"] == pytest.approx(0.5)  # 4 GFLOP / 0.02 s = 200 GFLOP/s of 400
    assert row["p50_ms"] == 20.0 and row["settled"] is True
