"""Package labels: A6 PDF pages with the package code as QR code and Code 128 barcode (reportlab, no network)."""

from __future__ import annotations

import io

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode import code128, qr
from reportlab.graphics.shapes import Drawing
from reportlab.lib.pagesizes import A6
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas


def label_pdf(jobs) -> bytes:
    """One A6 page per job: recipient, address, window, QR + barcode of the package code."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A6, pageCompression=0)  # uncompressed: labels are small, and text stays greppable
    width, height = A6
    for job in jobs:
        c.setFont("Helvetica-Bold", 14)
        c.drawString(8 * mm, height - 12 * mm, "SERENA")
        c.setFont("Helvetica", 8)
        c.drawRightString(width - 8 * mm, height - 12 * mm, f"ref {job.reference}"[:40])
        c.setFont("Helvetica-Bold", 11)
        c.drawString(8 * mm, height - 22 * mm, (job.recipient_name or "Recipient")[:40])
        c.setFont("Helvetica", 9)
        text = c.beginText(8 * mm, height - 28 * mm)
        for line in (job.address or "").split(",")[:4]:
            text.textLine(line.strip()[:48])
        c.drawText(text)
        c.drawString(8 * mm, height - 50 * mm,
                     f"Window {job.window_start:%Y-%m-%d %H:%M}–{job.window_end:%H:%M} UTC · {job.parcels} parcel(s) · {job.weight_kg:.1f} kg")
        widget = qr.QrCodeWidget(job.package_code)
        x0, y0, x1, y1 = widget.getBounds()
        size = 38 * mm
        d = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
        d.add(widget)
        renderPDF.draw(d, c, 8 * mm, 38 * mm)
        bar = code128.Code128(job.package_code, barHeight=16 * mm, barWidth=0.36 * mm)
        bar.drawOn(c, 6 * mm, 14 * mm)
        c.setFont("Courier-Bold", 12)
        c.drawString(8 * mm, 8 * mm, job.package_code)
        c.showPage()
    c.save()
    return buf.getvalue()
