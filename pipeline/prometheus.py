"""Prometheus text exposition format (version 0.0.4), written without a client library.

>>> metrics = Exposition()
>>> metrics.add("vestwatch_frames_total", "counter", "Frames captured", {"stream": "cam1"}, 42)
>>> print(metrics.text())
# HELP vestwatch_frames_total Frames captured
# TYPE vestwatch_frames_total counter
vestwatch_frames_total{stream="cam1"} 42
"""

from __future__ import annotations

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_MS = [25, 50, 100, 250, 500, 1000, 2500, 5000]  # upper bounds of the latency histograms


def _label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float, suffix: str = "") -> None:
        """One sample; ``suffix`` (``_bucket``, ``_sum``, ``_count``) for histogram parts."""
        _, _, samples = self.families.setdefault(name, (kind, help_text, []))
        label_text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
        samples.append(
            f"{name}{suffix}{{{label_text}}} {float(value):g}" if label_text else f"{name}{suffix} {float(value):g}"
        )

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: dict[str, str],
        bounds: list[float],
        cumulative: list[int],
        total: float,
    ) -> None:
        for bound, count in zip([*bounds, float("inf")], cumulative):
            self.add(
                name,
                "histogram",
                help_text,
                {**labels, "le": "+Inf" if bound == float("inf") else f"{bound:g}"},
                count,
                "_bucket",
            )
        self.add(name, "histogram", help_text, labels, total, "_sum")
        self.add(name, "histogram", help_text, labels, cumulative[-1] if cumulative else 0, "_count")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"
