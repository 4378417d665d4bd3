"""The printable certificate of a credential: a one-page PDF (fpdf2) with a QR code (segno) that opens the
public verification page. The PDF is a rendering for people; the signed JSON is the credential."""

import io
import unicodedata

import segno
from fpdf import FPDF


def _latin1(text):
    """The PDF's core fonts know Latin-1: other characters lose their accents or become '?'."""
    text = str(text or "")
    out = []
    for ch in text:
        try:
            ch.encode("latin-1")
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("latin-1", "ignore").decode("latin-1")
            out.append(base or "?")
    return "".join(out)


def render(document, verify_url, revoked=False):
    """The PDF bytes of the signed credential ``document``."""
    subject = document.get("credentialSubject", {})
    achievement = subject.get("achievement", {})
    learner = next((i.get("identityHash") for i in subject.get("identifier", []) if isinstance(i, dict)), "")
    issuer = document.get("issuer", {})
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_title(_latin1(document.get("name", "Credential")))
    pdf.set_author(_latin1(issuer.get("name", "")))
    pdf.add_page()
    pdf.set_margins(20, 20, 20)
    pdf.set_font("helvetica", "B", 28)
    pdf.cell(0, 18, "Certificate of completion", new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("helvetica", "", 14)
    pdf.cell(0, 10, _latin1(issuer.get("name", "")) + " certifies that", new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("helvetica", "B", 22)
    pdf.cell(0, 14, _latin1(learner), new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("helvetica", "", 14)
    pdf.cell(0, 10, "has completed", new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("helvetica", "B", 18)
    pdf.multi_cell(0, 10, _latin1(achievement.get("name", "")), new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("helvetica", "", 11)
    pdf.multi_cell(0, 6, _latin1(achievement.get("criteria", {}).get("narrative", "")), new_x="LMARGIN", new_y="NEXT")
    for evidence in document.get("evidence", []):
        pdf.multi_cell(
            180,
            6,
            _latin1(f"{evidence.get('name', '')}: {evidence.get('narrative', '')}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(2)
    pdf.multi_cell(180, 6, _latin1(f"Issued {document.get('validFrom', '')}. Credential {document.get('id', '')}."))
    if revoked:
        pdf.set_text_color(180, 0, 0)
        pdf.set_font("helvetica", "B", 14)
        pdf.multi_cell(180, 8, "This credential has been revoked by its issuer.")
        pdf.set_text_color(0, 0, 0)
    qr = io.BytesIO()
    segno.make(verify_url, error="m").save(qr, kind="png", scale=6, border=2)
    qr.seek(0)
    pdf.image(qr, x=pdf.w - 75, y=pdf.h - 85, w=55, h=55)
    pdf.set_xy(pdf.w - 95, pdf.h - 28)
    pdf.set_font("helvetica", "", 8)
    pdf.multi_cell(75, 4, _latin1("Verify: " + verify_url), align="C")
    return bytes(pdf.output())
