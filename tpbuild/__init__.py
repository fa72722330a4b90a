"""tpbuild: a declarative, content-addressed build tool. The engine; rule sets plug in through `tpbuild.plugin`."""

__version__ = "0.1.0"
