"""`model_repository`: the directory a Triton server is pointed at, one subdirectory per model.

Each model's directory is named by its `model_name`, because the server refuses a directory whose
name disagrees with the config. Patterns (`//models/...`) take every `triton_model` they match and
pass over other targets in those packages; an explicit label must be a `triton_model`.
"""

from __future__ import annotations

from tpbuild.plugin import AnalysisContext, Attrs, Input, Label, LabelOrPattern, Rule, TargetInfo


class RepositoryAttrs(Attrs):
    models: tuple[LabelOrPattern, ...]


class ModelRepository(Rule):
    name = "model_repository"
    version = "1"
    attrs = RepositoryAttrs

    def analyze(self, ctx: AnalysisContext, attrs: RepositoryAttrs) -> TargetInfo:
        chosen: dict[Label, None] = {}
        for ref in attrs.models:
            if isinstance(ref, Label):
                if ctx.dep(ref).rule != "triton_model":
                    raise ctx.error(("models",), f"{ref} is a {ctx.dep(ref).rule}, not a triton_model")
                chosen[ref] = None
            else:
                for lbl in ctx.expand(ref):
                    if ctx.dep(lbl).rule == "triton_model":
                        chosen[lbl] = None
        if not chosen:
            raise ctx.error(("models",), "no triton_model matched: list model labels or a pattern "
                                         "such as //models/...")
        by_name: dict[str, Label] = {}
        entries: list[tuple[str, Input]] = []
        for lbl in sorted(chosen):
            info = ctx.dep(lbl)
            name = info.values["model_name"]
            if name in by_name:
                raise ctx.error(("models",), f"two models are named {name!r}: {by_name[name]} and {lbl}; "
                                             "set a distinct model_name on one of them")
            by_name[name] = lbl
            entries.append((name, info.output))
        tree = ctx.tree("ModelRepository", entries)
        return TargetInfo(rule=self.name, output=tree, values={"models": dict(sorted(by_name.items()))})
