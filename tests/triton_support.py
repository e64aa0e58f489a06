"""Tiny python-backend models and Triton packages written by tests, for the real Triton server.

Each model is a Triton model directory (``<name>/config.pbtxt`` and ``<name>/1/model.py``); a
package is that directory as ``model.tar.gz``, laid out as the registry packages models.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

TEXT_CONFIG = textwrap.dedent(
    """\
    backend: "python"
    max_batch_size: 8
    input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
    output [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)

UPPER_CASE_ECHO = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                upper = np.array(
                    [[value.decode().upper().encode() for value in row] for row in texts],
                    dtype=object,
                )
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", upper)]))
            return responses
    """
)

BROKEN_INITIALIZE_MESSAGE = "tokenizer file is missing: vocab.txt"

RAISES_IN_INITIALIZE = textwrap.dedent(
    f"""\
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError({BROKEN_INITIALIZE_MESSAGE!r})

        def execute(self, requests):
            return []
    """
)

RAISES_IN_EXECUTE = textwrap.dedent(
    """\
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError("label map is empty"))
                for _ in requests
            ]
    """
)


def sleeps_in_initialize(seconds: float) -> str:
    """A model whose ``initialize`` takes ``seconds`` (a slow cold start) and then echoes."""
    return UPPER_CASE_ECHO.replace(
        "class TritonPythonModel:\n",
        "import time\n\n\nclass TritonPythonModel:\n"
        f"    def initialize(self, args):\n        time.sleep({seconds!r})\n\n",
    )


def text_request(*texts: str) -> dict:
    """The KServe v2 JSON body sending ``texts`` as one BYTES row each."""
    return {
        "inputs": [
            {"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": list(texts)}
        ]
    }


def output_data(answer: dict, name: str = "TEXT") -> list:
    return next(output["data"] for output in answer["outputs"] if output["name"] == name)


def write_model(repository: Path, name: str, model_py: str, *, config: str = TEXT_CONFIG) -> Path:
    """Write ``repository/name`` as a Triton model; return ``repository`` (the MME url)."""
    model_dir = Path(repository) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(model_py)
    return Path(repository)


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    triton_model_name: str


def build_package(
    directory: Path, name: str, model_py: str, *, config: str = TEXT_CONFIG
) -> Package:
    """``directory/<name>.tar.gz`` holding ``<name>/config.pbtxt`` and ``<name>/1/model.py``."""
    members = [
        (f"{name}/", None),
        (f"{name}/config.pbtxt", config.encode()),
        (f"{name}/1/", None),
        (f"{name}/1/model.py", model_py.encode()),
    ]
    return _write_tar(Path(directory) / f"{name}.tar.gz", members, name)


def build_raw_package(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Package:
    """A tarball with exactly the given members (for unsafe layouts a packager never writes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, content = member
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    Path(path).write_bytes(buffer.getvalue())
    return Package(
        path=Path(path), sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), triton_model_name=""
    )


def _write_tar(path: Path, members: list[tuple[str, bytes | None]], name: str) -> Package:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member_name, content in members:
            info = tarfile.TarInfo(member_name.rstrip("/"))
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    path.write_bytes(buffer.getvalue())
    return Package(
        path=path, sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), triton_model_name=name
    )
