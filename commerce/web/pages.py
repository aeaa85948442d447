"""The storefront: server-rendered pages over the commerce services (no JavaScript needed).

Pages: category and search with facets (/shop, /shop/search), product with schema.org
`Product` JSON-LD (/shop/p/<slug>), cart (/shop/cart), checkout with delivery quote and
payment step (/shop/checkout), order status and tracking (/shop/orders/<tracking token>).
The guest's cart token lives in an HttpOnly, SameSite=Lax cookie; forms post back to
these routes and are answered with a redirect (post/redirect/get), so a refresh never
re-submits. The checkout form carries an idempotency key made when the form was
rendered, so a double submit places one order.

Card payments: in production the card is tokenised in the browser by Stripe.js and only
the PaymentMethod id reaches us. Stripe.js cannot be loaded here (no third-party origins
in the CSP, no internet in tests), so outside production the payment step offers
Stripe's published TEST cards and the server turns the chosen one into a PaymentMethod
with the SDK — exactly what Stripe.js would have sent. No other card number is accepted,
and the step refuses to run with SERENA_ENV=production. Likewise the 3-D Secure
"authenticate" button drives localstripe's simulated bank page.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import stripe
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from commerce.cart import service as carts
from commerce.catalog import service as catalog
from commerce.catalog.schemas import parse_filters
from commerce.checkout import delivery
from commerce.checkout import service as checkout_service
from commerce.deps import AppSettings, Provider
from commerce.orders import service as orders
from commerce.payments import service as payments
from core.errors import NotFound, SerenaError
from core.rbac import Permission
from core.settings import Env
from serena.deps import Db, require

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
CART_COOKIE = "serena_cart"

# Stripe's published test cards (https://docs.stripe.com/testing); nothing else is accepted.
TEST_CARDS = {
    "4242424242424242": "Visa 4242 — succeeds",
    "4000002760003184": "Visa 3184 — needs 3-D Secure",
    "4000000000000341": "Visa 0341 — declined",
}

router = APIRouter(prefix="/shop", tags=["storefront"], include_in_schema=False)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def _page(request: Request, template: str, *, title: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"title": title, **ctx}, status_code=status_code,
                                      headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                               "Referrer-Policy": "same-origin"})


def _cart_token(request: Request) -> str | None:
    return request.cookies.get(CART_COOKIE)


async def _cart(db, request: Request, settings, *, create: bool):
    token = _cart_token(request)
    if token:
        try:
            return await carts.by_token(db=db, token=token)
        except NotFound:
            pass
    return await carts.create(db=db, currency=settings.commerce_currency) if create else None


def _with_cookie(resp: Response, token: str) -> Response:
    resp.set_cookie(CART_COOKIE, token, httponly=True, samesite="lax", max_age=30 * 86400, path="/shop")
    return resp


@router.get("/static/shop.css")
async def css(_=require(Permission.PUBLIC)):
    return Response((HERE / "static" / "shop.css").read_text(), media_type="text/css",
                    headers={"Cache-Control": "max-age=3600"})


@router.get("", response_class=HTMLResponse)
@router.get("/search", response_class=HTMLResponse)
async def search_page(request: Request, db: Db, q: str = "", category: str | None = None, sort: str = "relevance",
                      page: int = 1, _=require(Permission.PUBLIC)):
    """Search and category browsing with facet counts; facet links add or remove one filter."""
    f = request.query_params.getlist("f")
    cat = None
    if category:
        try:
            cat = await catalog.get_category(db=db, slug=category)
        except NotFound:
            cat = None
    res = await catalog.search(db=db, q=q, category_id=cat.id if cat else None, filters=parse_filters(f),
                               sort=sort, page=max(1, page), per_page=24)
    crumbs = await catalog.breadcrumb(db=db, category=cat) if cat else []

    def link(**change: Any) -> str:
        params: list[tuple[str, str]] = []
        state = {"q": q, "category": category or "", "sort": sort}
        state.update({k: v for k, v in change.items() if k != "toggle"})
        for k, v in state.items():
            if v:
                params.append((k, str(v)))
        filters = list(f)
        if "toggle" in change:
            tok = change["toggle"]
            filters = [x for x in filters if x != tok] if tok in filters else [*filters, tok]
        params += [("f", x) for x in filters]
        return "/shop/search?" + urlencode(params)

    visible_cats = [c for c in res.categories if (cat is None and c["parent_id"] is None) or (cat and c["parent_id"] == cat.id)]
    return _page(request, "search.html", title=f"Search: {q}" if q else (cat.name if cat else "Shop"), q=q, res=res,
                 category=cat, crumbs=crumbs, active=set(f), link=link, visible_cats=visible_cats, sort=sort,
                 tree=await catalog.category_tree(db=db))


@router.get("/p/{slug}", response_class=HTMLResponse)
async def product_page(slug: str, request: Request, db: Db, settings: AppSettings, _=require(Permission.PUBLIC)):
    """A product with its variants, and schema.org Product JSON-LD for search engines."""
    p = await catalog.get_product(db=db, slug=slug, currency=settings.commerce_currency,
                                  storage_base_url=settings.commerce_image_base_url)
    base = str(request.base_url).rstrip("/")
    ld = {
        "@context": "https://schema.org", "@type": "Product", "name": p["name"], "description": p["description"],
        "brand": {"@type": "Brand", "name": p["brand"]}, "sku": p["variants"][0]["sku"] if p["variants"] else None,
        "image": [base + i["url"] if i["url"].startswith("/") else i["url"] for i in p["images"]],
        "offers": [{"@type": "Offer", "sku": v["sku"], "price": str(v["price"]), "priceCurrency": p["currency"],
                    "availability": "https://schema.org/" + ("InStock" if v["in_stock"] > 0 else "OutOfStock"),
                    "url": f"{base}/shop/p/{slug}"} for v in p["variants"] if v["price"] is not None],
    }
    # JSON inside <script>: escape "<" so a product text containing "</script>" cannot end the element.
    ld_json = json.dumps(ld, ensure_ascii=False).replace("<", "\\u003c")
    return _page(request, "product.html", title=p["name"], p=p, ld_json=ld_json)


@router.post("/cart/add")
async def cart_add(request: Request, db: Db, settings: AppSettings, variant_id: Annotated[int, Form()],
                   quantity: Annotated[int, Form()] = 1, _=require(Permission.PUBLIC)):
    cart = await _cart(db, request, settings, create=True)
    await carts.add(db=db, cart=cart, variant_id=variant_id, quantity=max(1, min(quantity, 99)))
    return _with_cookie(RedirectResponse("/shop/cart", status_code=303), cart.token)


@router.post("/cart/update")
async def cart_update(request: Request, db: Db, settings: AppSettings, variant_id: Annotated[int, Form()],
                      quantity: Annotated[int, Form()], _=require(Permission.PUBLIC)):
    cart = await _cart(db, request, settings, create=False)
    if cart is not None:
        await carts.set_line(db=db, cart=cart, variant_id=variant_id, quantity=max(0, min(quantity, 99)))
    return RedirectResponse("/shop/cart", status_code=303)


@router.get("/cart", response_class=HTMLResponse)
async def cart_page(request: Request, db: Db, settings: AppSettings, _=require(Permission.PUBLIC)):
    cart = await _cart(db, request, settings, create=False)
    view = await carts.view(db=db, cart=cart) if cart else None
    return _page(request, "cart.html", title="Cart", cart=view)


@router.get("/checkout", response_class=HTMLResponse)
async def checkout_page(request: Request, db: Db, settings: AppSettings, lat: float | None = None,
                        lng: float | None = None, address: str = "", name: str = "", email: str = "", phone: str = "",
                        _=require(Permission.PUBLIC)):
    """Contact and address; once a location is given, the quote (fee, windows) and the payment step."""
    cart = await _cart(db, request, settings, create=False)
    view = await carts.view(db=db, cart=cart) if cart else None
    quote, error = None, None
    if view and view["lines"] and lat is not None and lng is not None:
        try:
            quote = await delivery.quote(db=db, settings=settings, lat=lat, lng=lng, currency=view["currency"],
                                         now=datetime.now(UTC))
        except SerenaError as exc:
            error = str(exc)
    return _page(request, "checkout.html", title="Checkout", cart=view, quote=quote, error=error, lat=lat, lng=lng,
                 address=address, name=name, email=email, phone=phone, key=str(uuid.uuid4()),
                 test_cards=TEST_CARDS if settings.env != Env.PRODUCTION else {},
                 local_time=lambda dt: dt.astimezone(delivery.ZoneInfo(settings.commerce_timezone)).strftime("%a %d %b %H:%M"))


async def _test_payment_method(settings, provider, number: str) -> str:
    if settings.env == Env.PRODUCTION or number not in TEST_CARDS:
        raise checkout_service.PaymentRefused("card payments need Stripe.js in production; only test cards are accepted here")
    client = getattr(provider, "client", None) or stripe.StripeClient(settings.stripe_api_key, base_addresses={
        "api": settings.stripe_api_base}, http_client=stripe.HTTPXClient())
    pm = await client.v1.payment_methods.create_async(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": datetime.now(UTC).year + 3, "cvc": "123"}})
    return pm.id


@router.post("/checkout")
async def place(request: Request, settings: AppSettings, provider: Provider, key: Annotated[str, Form()],
                name: Annotated[str, Form()], email: Annotated[str, Form()], address: Annotated[str, Form()],
                lat: Annotated[float, Form()], lng: Annotated[float, Form()], window_start: Annotated[str, Form()],
                payment_method: Annotated[str, Form()], phone: Annotated[str, Form()] = "",
                test_card: Annotated[str, Form()] = "", coupon: Annotated[str, Form()] = "",
                expected_total: Annotated[str, Form()] = "", _=require(Permission.PUBLIC)):
    """Place the order and pay; then show the order's page (or the checkout again with the reason)."""
    token = _cart_token(request)
    back = "/shop/checkout?" + urlencode({"lat": lat, "lng": lng, "address": address, "name": name, "email": email,
                                          "phone": phone})
    try:
        pm = await _test_payment_method(settings, provider, test_card) if payment_method == "card" else None
        req = checkout_service.CheckoutRequest(
            checkout_key=key, email=email, name=name, phone=phone, address_text=address, lat=lat, lng=lng,
            window_start=datetime.fromisoformat(window_start), payment_method=payment_method, payment_method_id=pm,
            cart_token=token, coupon=coupon or None,
            expected_total=Decimal(expected_total) if expected_total else None)
        result = await checkout_service.checkout(sessions=request.app.state.sessions, settings=settings,
                                                 provider=provider, req=req)
    except (SerenaError, ValueError) as exc:
        return RedirectResponse(back + "&" + urlencode({"error": str(exc)}), status_code=303)
    return RedirectResponse(f"/shop/orders/{result.order.tracking_token}", status_code=303)


@router.get("/orders/{token}", response_class=HTMLResponse)
async def order_page(token: str, request: Request, db: Db, settings: AppSettings, _=require(Permission.PUBLIC)):
    """Order status, timeline, invoice and the tracking link (the token in the URL is the guest's key)."""
    order = await orders.by_tracking_token(db=db, token=token)
    view = await orders.view(db=db, order=order)
    return _page(request, "order.html", title=f"Order {order.number}", o=view,
                 simulated_bank=settings.env != Env.PRODUCTION and view["payment_status"] == "action_required")


@router.post("/orders/{token}/authenticate")
async def authenticate(token: str, request: Request, db: Db, settings: AppSettings, provider: Provider,
                       _=require(Permission.PUBLIC)):
    """Development only: complete 3-D Secure on localstripe's simulated bank, then refresh the payment."""
    order = await orders.by_tracking_token(db=db, token=token)
    summary = await orders.payment_summary(db=db, order_id=order.id)
    if settings.env != Env.PRODUCTION and summary and summary["client_secret"]:
        api_base = getattr(provider, "api_base", settings.stripe_api_base)
        async with httpx.AsyncClient(timeout=10) as h:
            await h.post(f"{api_base}/v1/payment_intents/{summary['provider_ref']}/_authenticate",
                         data={"client_secret": summary["client_secret"], "success": "true"},
                         headers={"Authorization": f"Bearer {settings.stripe_api_key}"})
        await payments.refresh(db=db, provider=provider, order_id=order.id)
    return RedirectResponse(f"/shop/orders/{token}", status_code=303)

