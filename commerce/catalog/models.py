"""Catalog tables: categories (any depth), product types with typed attributes, products, variants, prices, images, stock per depot.

Mirrors migration c0001. `Product.prices` and `Product.facets` are denormalised from the
variants and attributes by `catalog.service.refresh_search_fields` so that search and
facet counting read one table.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Computed, ForeignKey, Integer, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from core.db import Base


# The stored generated column of migration c0001: name (stemmed, weight A), brand (as is, B), description (C).
SEARCH_EXPRESSION = (
    "setweight(to_tsvector('english', coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('simple', coalesce(brand, '')), 'B') || "
    "setweight(to_tsvector('english', coalesce(description, '')), 'C')"
)


class Category(Base):
    """A node of the category tree; `path` is the ids from the root down to this node (inclusive)."""

    __tablename__ = "catalog_categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("catalog_categories.id"))
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ProductType(Base):
    """A kind of product and the typed attributes its products carry.

    `attributes` is a list of {"code": "size", "name": "Size", "type": "choice" | "text" | "number",
    "values": [...] (choice only), "variant": bool (varies per variant)}.
    """

    __tablename__ = "product_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("product_types.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("catalog_categories.id"))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    brand: Mapped[str] = mapped_column(String(120), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    tax_class: Mapped[str] = mapped_column(String(32), default="standard")
    skills: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)  # "cold": needs a chilled vehicle
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    early_access_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # tier benefit
    prices: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)  # lowest variant price per currency
    facets: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)  # "brand:Acme", "colour:red", "cat:12"
    search: Mapped[Any] = mapped_column(TSVECTOR, Computed(SEARCH_EXPRESSION, persisted=True), deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Variant(Base):
    """A purchasable SKU; weight and volume become vehicle capacity in dispatch."""

    __tablename__ = "product_variants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    volume_l: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class VariantPrice(Base):
    """A variant's price in one currency; `includes_tax` says whether VAT is inside the amount."""

    __tablename__ = "variant_prices"

    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variants.id", ondelete="CASCADE"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    includes_tax: Mapped[bool] = mapped_column(Boolean, default=True)


class ProductImage(Base):
    """An image stored behind the object-storage interface (`commerce.storage`); only its key is here."""

    __tablename__ = "product_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    storage_key: Mapped[str] = mapped_column(Text)
    alt: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)


class Stock(Base):
    """Units of a variant available at a depot (already net of reservations)."""

    __tablename__ = "stock"

    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variants.id", ondelete="CASCADE"), primary_key=True)
    depot_id: Mapped[int] = mapped_column(ForeignKey("depots.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)


class TaxRate(Base):
    """VAT rate for (country, region, tax class); region '' is the country's default."""

    __tablename__ = "tax_rates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    country: Mapped[str] = mapped_column(String(2))
    region: Mapped[str] = mapped_column(String(64), default="")
    tax_class: Mapped[str] = mapped_column(String(32))
    rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
