"""Do our ONNX graphs stay within what TensorRT's ONNX parser supports? The operators each graph uses, checked
against TensorRT's published operator table (kept as data in `engines/data/trt_onnx_ops.txt`, source named there):
operator names, the opset range, and the one restricted operator our graphs use (Resize: its modes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

RESIZE_MODES = {
    "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                       "align_corners"},
    "mode": {"nearest", "linear"},
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
}
"""Resize attribute values TensorRT's parser accepts (the table's restriction on Resize)."""


@dataclass(frozen=True)
class OperatorTable:
    """TensorRT's ONNX operator support for one release."""

    release: str
    opsets: tuple[int, int]
    supported: frozenset[str]
    known: frozenset[str]


@cache
def trt_operator_table() -> OperatorTable:
    """The table shipped in engines/data, parsed."""
    text = resources.files("seg_video.engines").joinpath("data/trt_onnx_ops.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    header = {key: value for key, _, value in (line[2:].partition(": ") for line in lines if line.startswith("# "))}
    low, high = (int(value) for value in header["opsets"].split("-"))
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    return OperatorTable(release=header["release"], opsets=(low, high),
                         supported=frozenset(row[0] for row in rows if row[1] == "Y"),
                         known=frozenset(row[0] for row in rows))


def graph_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of the graph, those in subgraphs (If/Loop bodies) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from graph_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from graph_nodes(subgraph)


def operators(model: onnx.ModelProto) -> list[str]:
    """The sorted operator types the model's graph uses (default ONNX domain)."""
    return sorted({node.op_type for node in graph_nodes(model.graph) if node.domain in ("", "ai.onnx")})


def trt_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT's ONNX parser would refuse the model, one line each; empty when the table allows all of it."""
    import onnx

    table = trt_operator_table()
    problems = []
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    if opset is None or not table.opsets[0] <= opset <= table.opsets[1]:
        low, high = table.opsets
        problems.append(f"opset {opset} is outside TensorRT {table.release}'s range {low}..{high}")
    for node in graph_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name or node.op_type}: custom domain {node.domain!r} needs a TensorRT plugin")
        elif node.op_type not in table.supported:
            state = "unsupported" if node.op_type in table.known else "not in the table"
            problems.append(f"{node.name or node.op_type}: {node.op_type} is {state} in TensorRT {table.release}")
        elif node.op_type == "Resize":
            values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for name, allowed in RESIZE_MODES.items():
                value = values.get(name)
                if value is not None and value.decode() not in allowed:
                    problems.append(f"{node.name}: Resize {name}={value.decode()} is not supported by TensorRT")
            if values.get("antialias", 0):
                problems.append(f"{node.name}: Resize with antialias is not supported by TensorRT")
    return problems
