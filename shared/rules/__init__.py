"""The rules engine wrapper the review and scoring services share.

Rule maintainers write YAML rulesets (`rulesets/*.yaml`, see docs/rules.md); this package
reads and checks them (`load`, `check`), resolves parameters (`resolve`), compiles them to
durable_rules JSON (`compile`), evaluates facts on the process's one engine (`engine`),
picks the version in force on a date and swaps in published versions (`registry`), and
explains decisions (`decision`, `explain`). The policy is in the YAML; Python interprets it.
"""

from .decision import canonical_json, explanation, input_sha256
from .engine import RulesEngine, RulesEngineError, shared_engine
from .facts import (
    FactsError,
    FactSpec,
    FactType,
    document_types,
    funds_dict,
    known_facts,
    project_dict,
    project_facts,
    to_engine,
)
from .load import load_file, load_paths, load_text
from .model import AnyRuleset, Problem, RulesetError
from .registry import (
    Evaluation,
    Gate,
    Rules,
    RulesetRegistry,
    RulesView,
    default_registry,
    rulesets_dir,
)

__all__ = [
    "AnyRuleset",
    "Evaluation",
    "FactSpec",
    "FactType",
    "FactsError",
    "Gate",
    "Problem",
    "Rules",
    "RulesEngine",
    "RulesEngineError",
    "RulesView",
    "RulesetError",
    "RulesetRegistry",
    "canonical_json",
    "default_registry",
    "document_types",
    "explanation",
    "funds_dict",
    "input_sha256",
    "known_facts",
    "load_file",
    "load_paths",
    "load_text",
    "project_dict",
    "project_facts",
    "rulesets_dir",
    "shared_engine",
    "to_engine",
]
