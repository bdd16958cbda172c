"""The backends a network runs on, by name: the golden model and the simulated engine.

A backend has ``name``, ``run_layer(layer, x) -> (y, info)``, where ``info`` is a dict of
per-layer report fields (``ran_on``, and for hardware ``cycles``, ``mac_utilization``, ...),
and ``close()``; the hardware backends also run whole networks in one simulator launch
(``run_network``). :data:`BACKENDS` maps each name to a factory; hardware factories take
keyword options (``config=``, ``waves=``).
"""

from model.network import run_layer

__all__ = ["BACKENDS", "ModelBackend"]


class ModelBackend:
    """Runs every layer on the golden model (:func:`model.network.run_layer`)."""

    name = "model"

    def run_layer(self, layer, x):
        return run_layer(layer, x), {"ran_on": "model"}

    def close(self):
        pass


def _hardware(sim: str):
    def factory(**options):
        # Imported when asked for: the simulators' side is not needed to plan or run a model
        # on the golden model.
        from sim.hw_backend import HardwareBackend
        return HardwareBackend(sim, **options)
    factory.__name__ = f"{sim}_backend"
    return factory


#: Backend name -> factory.
BACKENDS = {
    "model": ModelBackend,
    "icarus": _hardware("icarus"),
    "verilator": _hardware("verilator"),
}
