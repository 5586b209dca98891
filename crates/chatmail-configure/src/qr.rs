//! QR codes for the relay's pages, drawn on the server as inline SVG: no
//! script and no image file for a phone camera to scan the account link.

use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin around the code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

/// `text` as an inline `<svg>` element (class `qr`, one path of dark
/// modules on a white square), or `None` if it is too long for a QR code.
#[must_use]
pub fn svg(text: &str, label: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let width = code.width();
    let size = width + 2 * QUIET_ZONE;
    let mut path = String::new();
    for (index, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (x, y) = (index % width + QUIET_ZONE, index / width + QUIET_ZONE);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Some(format!(
        "<svg class=\"qr\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"{label}\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_becomes_one_svg_with_its_quiet_zone() {
        let drawn = svg("DCACCOUNT:https://chat.example.org/new", "code").expect("fits");
        let code = QrCode::with_error_correction_level(
            "DCACCOUNT:https://chat.example.org/new",
            EcLevel::M,
        )
        .expect("fits");
        let size = code.width() + 8;
        assert!(drawn.starts_with("<svg class=\"qr\""));
        assert!(drawn.contains(&format!("viewBox=\"0 0 {size} {size}\"")));
        let dark = code
            .to_colors()
            .iter()
            .filter(|&&color| color == Color::Dark)
            .count();
        assert_eq!(drawn.matches("h1v1h-1z").count(), dark);
        // The top left finder pattern's corner, inside the quiet zone.
        assert!(drawn.contains("M4 4h1v1h-1z"));
    }

    #[test]
    fn text_beyond_a_qr_codes_capacity_is_refused() {
        assert_eq!(svg(&"x".repeat(3000), "code"), None);
    }
}
