"""Message templates: Jinja2 files per locale, kind and channel, with the customer's locale falling back to English.

Files: `notifications/templates/<locale>/<kind>.email.txt` (blocks `subject` and `body`),
`<kind>.email.html` (the HTML alternative; autoescaped, so a customer name like
`<b>Eve</b>` arrives as text), `<kind>.sms.txt`. Plain-text templates are not
HTML-escaped on purpose: an apostrophe in a text part must stay an apostrophe.
A locale "fi-FI" tries `fi-FI`, then `fi`, then `en`.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

DIR = Path(__file__).with_name("templates")
DEFAULT_LOCALE = "en"
KINDS = ("order_confirmed", "out_for_delivery", "arriving_soon", "delivered", "delivery_failed")


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,  # a typo in a template fails the render, not the customer's message
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def locale_chain(locale: str | None) -> list[str]:
    """'fi-FI' → ['fi-FI', 'fi', 'en']; unknown or empty → ['en']."""
    chain: list[str] = []
    loc = (locale or "").replace("_", "-").strip()
    if loc:
        chain.append(loc)
        base = loc.split("-")[0].lower()
        if base not in chain:
            chain.append(base)
    if DEFAULT_LOCALE not in chain:
        chain.append(DEFAULT_LOCALE)
    return chain


@dataclasses.dataclass(frozen=True)
class Rendered:
    locale: str  # the locale whose templates were used
    subject: str
    text: str
    html: str | None


def _block(env: Environment, name: str, block: str, context: dict[str, Any]) -> str:
    template = env.get_template(name)
    if block not in template.blocks:
        return template.render(context).strip()
    return "".join(template.blocks[block](template.new_context(context))).strip()


def render(kind: str, channel: str, locale: str | None, context: dict[str, Any]) -> Rendered:
    """Render `kind` for `channel` ("email" or "sms") in the best available locale."""
    env = environment()
    for loc in locale_chain(locale):
        context = {"unsubscribe_url": None, **context, "lang": loc}
        try:
            if channel == "email":
                name = f"{loc}/{kind}.email.txt"
                subject = _block(env, name, "subject", context)
                text = _block(env, name, "body", context)
                try:
                    html = env.get_template(f"{loc}/{kind}.email.html").render(context).strip()
                except TemplateNotFound:
                    html = None
                return Rendered(loc, subject, text, html)
            if channel == "sms":
                return Rendered(loc, "", env.get_template(f"{loc}/{kind}.sms.txt").render(context).strip(), None)
        except TemplateNotFound:
            continue
    raise LookupError(f"no template for {kind}/{channel} in {locale_chain(locale)}")
