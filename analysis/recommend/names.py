"""Kubernetes naming rules for names that come from telemetry (untrusted) and end up in exported configuration.

A namespace, pod, workload or label value read from a cluster or a Prometheus can hold anything: YAML syntax, shell
metacharacters, newlines, control characters. Nothing of that may reach an exported file. Every name an exported
object carries is checked against the rule Kubernetes itself applies (apimachinery ``pkg/util/validation``):

- **DNS-1123 label** (namespaces, container names, Service names): at most 63 characters of ``[a-z0-9-]``, starting
  and ending with an alphanumeric;
- **DNS-1123 subdomain** (Deployment, StatefulSet, Job, ConfigMap, NodePool names): at most 253 characters, labels
  as above joined by dots;
- **label value**: empty, or at most 63 characters of ``[A-Za-z0-9._-]`` starting and ending with an alphanumeric.

A name that fails is never repaired (a repaired name would point at some other object): the recommendation that
needs it is skipped, with a warning that says which name and why. Free text that goes into comments and markdown
(price sources, reasons) passes through ``clean_text``, which drops control characters, so a comment stays one line.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

RULES = {
    "dns-1123 label": "at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
    "dns-1123 subdomain": "at most 253 characters of a-z, 0-9, '-' and '.', each part starting and ending with a "
    "letter or digit",
    "label value": "at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or "
    "digit",
}


def is_dns_label(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 63 and _LABEL.fullmatch(name) is not None


def is_dns_subdomain(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 253 and _SUBDOMAIN.fullmatch(name) is not None


def is_label_value(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 63 and _LABEL_VALUE.fullmatch(name) is not None


_CHECKS = {"dns-1123 label": is_dns_label, "dns-1123 subdomain": is_dns_subdomain, "label value": is_label_value}


def problem(what: str, name: object, rule: str) -> str | None:
    """None when ``name`` satisfies ``rule``, else a one-line warning naming it (escaped, so it cannot inject)."""
    if _CHECKS[rule](name):
        return None
    return f"{what} {name!a} is not a valid Kubernetes {rule} ({RULES[rule]})"


def clean_text(text: object) -> str:
    """``text`` as one line of plain text: control characters (newlines included) become spaces."""
    return _CONTROL.sub(" ", str(text))
