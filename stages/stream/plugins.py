"""Processors and sinks by name, through entry points: a new one is one module and one entry point.

An entry point of the ``vestwatch.processors`` or ``vestwatch.sinks`` group names a class on
``Processor`` (``stages.stream.processors.base``) or ``Sink`` (``stages.stream.outputs.base``), both
``Plugin``s. Per stream, ``processors = [...]`` and ``sinks = [...]`` list them by name; the stream
stage makes each with ``create(settings, stream)`` and calls only the hooks its base declares, each
with a default, so a plug-in writes only those it needs. What ``Plugin`` declares for both:

- its figures: ``stats_type`` (a ``stages.stats.PluginStats`` dataclass, in ``self.stats``) and
  ``prefix``; the stage reports them in its heartbeat (``ctl status``) as ``<prefix>_<field>`` and
  ``/metrics`` exports them, with no other file to edit;
- its own config: ``settings_model`` (a pydantic model) validates the top-level section named
  ``section``, which must be the plug-in's entry-point name; ``section_settings`` hands it back.

A sink in ``mypackage/tally.py``, with ``tally = "mypackage.tally:TallySink"`` under
``[project.entry-points."vestwatch.sinks"]`` and ``sinks = [..., "tally"]`` for a stream::

    class TallySettings(BaseModel, extra="forbid"):
        every: int = 100

    @dataclass
    class TallyStats(PluginStats):
        frames: int = counter("vestwatch_tally_frames_total", "Inferred frames tallied")

    class TallySink(Sink):
        prefix, stats_type = "tally", TallyStats  # ctl status: tally_frames
        section, settings_model = "tally", TallySettings  # [tally] every = 10

        def __init__(self, settings: Settings, stream: StreamSettings) -> None:
            super().__init__()
            self.every = (self.section_settings(settings) or TallySettings()).every

        def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
            self.stats.frames += bool(analysis.seq)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from stages.config import Settings, StreamSettings, installed_plugins
from stages.stats import PluginStats, StreamStats, plugin_figures

if TYPE_CHECKING:
    from typing import Self

PROCESSORS = "vestwatch.processors"
SINKS = "vestwatch.sinks"


class Plugin:
    """What the stream stage asks of every processor and sink."""

    stats_type: ClassVar[type[PluginStats]] = PluginStats  # this plug-in's figures, kept in ``self.stats``
    # the heartbeat names a figure ``<prefix>_<field>``; the recorder and clips keep the empty prefix
    # (their figures were named ``frames``, ``bytes``, ``clips``... before plug-ins had prefixes)
    prefix: ClassVar[str] = ""
    section: ClassVar[str | None] = None  # the top-level config section it reads: its entry point's name
    settings_model: ClassVar[type[BaseModel] | None] = None  # validates that section

    def __init__(self, settings: Settings | None = None, stream: StreamSettings | None = None) -> None:
        """A plug-in that needs its settings keeps them in its own ``__init__`` and calls this one."""
        self.stats = self.stats_type()

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> Self | None:
        """The plug-in for ``stream``, or None when it has nothing to do there (the recorder of an
        unrecorded stream, webhooks without a receiver); called once per stream when the stage starts.
        By default ``cls(settings, stream)``."""
        return cls(settings, stream)

    @classmethod
    def section_settings(cls, settings: Settings) -> Any:
        """This plug-in's section of the config as ``settings_model`` made it; None when the config has none."""
        return settings.plugin_section(cls.section) if cls.section else None

    def close(self) -> None:
        """Called once when the stage stops: release what is held, flush what is queued."""


P = TypeVar("P", bound=Plugin)


@dataclass
class Loaded(Generic[P]):
    """The plug-ins a stream's config names, in order; those whose ``create`` declined still report
    their figures (at their defaults), so that ``ctl status`` names the same figures for every stream."""

    plugins: list[P]
    declined: list[type[P]]

    def running(self) -> list[tuple[str, PluginStats]]:
        """(prefix, figures) of each plug-in that runs: what ``/metrics`` and ``/healthz`` read (a declined
        MQTT sink exporting ``connected 0`` would read as a broker that is down)."""
        return [(plugin.prefix, plugin.stats) for plugin in self.plugins]

    def declined_stats(self) -> list[tuple[str, PluginStats]]:
        """(prefix, figures at their defaults) of each plug-in that declined the stream."""
        return [(cls.prefix, cls.stats_type()) for cls in self.declined]

    def reports(self) -> list[dict[str, Any]]:
        """Each plug-in's figures as the heartbeat names them."""
        return [plugin_figures(prefix, stats) for prefix, stats in self.running() + self.declined_stats()]


def load(group: str, names: list[str], settings: Settings, stream: StreamSettings) -> Loaded:
    """The plug-ins ``names`` of ``group`` for ``stream``, in order."""
    found = {entry.name: entry for entry in entry_points(group=group)}
    loaded: Loaded = Loaded([], [])
    for name in names:
        if name not in found:
            raise ValueError(f"streams.{stream.id}: no {group} named {name!r} (installed: {installed_plugins(group)})")
        cls = found[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            base = "Processor" if group == PROCESSORS else "Sink"
            raise ValueError(f"{group} {name!r}: {found[name].value} is not a class on {base} (see {__name__})")
        plugin = cls.create(settings, stream)
        if plugin is None:
            loaded.declined.append(cls)
        else:
            loaded.plugins.append(plugin)
    return loaded


def check_figures(*loaded: Loaded) -> None:
    """Refuse two figures of one name in a stream stage's heartbeat (a prefix taken twice)."""
    names = [f.name for f in fields(StreamStats)]
    for group in loaded:
        names += [name for report in group.reports() for name in report]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"stream plug-ins report figures of the same name: {', '.join(twice)} (give them a prefix)")
