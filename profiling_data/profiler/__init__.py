"""Local profiler: measure real inference engines on this node and write ``ProfileRecord`` rows.

``synergai profile`` is the command line; the pieces are usable on their own:

* :mod:`.engines` -- engines behind one interface, registered by name (onnxruntime, openvino);
* :mod:`.zoo` -- ResNet-50, MobileNet-V2 and BERT-mini (plus tiny test variants) built as ONNX with random weights;
* :mod:`.modelfile` -- inputs for any ONNX file, int8 quantisation;
* :mod:`.measure` -- the timing protocol; :mod:`.device` -- facts read from the machine;
* :mod:`.runner` -- grid, resumable output, sidecar; :mod:`.sparse` -- the ``--budget`` search.

See ``PROFILER.md`` at the repository root.
"""

from .engines import Engine, Session, availability, engine_names, get_engine, register
from .measure import DEFAULT, QUICK, Settings
from .runner import Config, Store, make_plan, measure_config, run
from .sparse import SparseSearch, front_recovery

__all__ = [
    "Engine",
    "Session",
    "availability",
    "engine_names",
    "get_engine",
    "register",
    "DEFAULT",
    "QUICK",
    "Settings",
    "Config",
    "Store",
    "make_plan",
    "measure_config",
    "run",
    "SparseSearch",
    "front_recovery",
]
