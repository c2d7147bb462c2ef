//! Reading the screen: the display's pixels, made easy for tesseract (greyscale, dark text on
//! light, scaled up: the VGA console's 8×16 font is small for it), read by Debian's `tesseract`.

use crate::{Error, Machine, Screen};
use regex::Regex;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The preprocessing of each text variant: (scale factor, invert). The first is the main one.
const VARIANTS: [(u32, bool); 3] = [(2, true), (3, true), (2, false)];

impl Screen {
    /// A greyscale copy `scale` times larger, inverted when `invert` (light text on dark turns
    /// into the dark on light that OCR expects).
    fn for_ocr(&self, scale: u32, invert: bool) -> (u32, u32, Vec<u8>) {
        let (w, h) = (self.width * scale, self.height * scale);
        let mut grey = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                let at = (((y / scale) * self.width + x / scale) * 3) as usize;
                let [r, g, b] = [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]].map(u32::from);
                let luma = ((299 * r + 587 * g + 114 * b) / 1000) as u8;
                grey.push(if invert { 255 - luma } else { luma });
            }
        }
        (w, h, grey)
    }
}

fn write_grey_png(path: &Path, (w, h, grey): &(u32, u32, Vec<u8>)) -> std::io::Result<()> {
    crate::screen::write_png(path, *w, *h, png::ColorType::Grayscale, grey)
}

/// Runs tesseract on `image`; its text.
fn tesseract(image: &Path) -> Result<String, String> {
    // Sparse text (page segmentation mode 11, as NixOS reads screens): a screen is not a page, and
    // the default mode finds no text block in a small window on a large empty desktop (an xterm's
    // prompt on X), where sparse text reads it; on the console it reads what the default does.
    let out = match Command::new("tesseract")
        .arg(image)
        .arg("stdout")
        .args(["--psm", "11"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("tesseract is not installed (Debian package tesseract-ocr)".into())
        }
        Err(e) => return Err(format!("cannot run tesseract: {e}")),
    };
    if !out.status.success() {
        return Err(format!(
            "tesseract failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Machine {
    /// The text on the display, read by OCR.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert!(vm.get_screen_text()?.contains("login:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_screen_text(&self) -> Result<String, Error> {
        let _step = self.step("reading the screen".into());
        let screen = self.screen_within(self.limit(None))?;
        self.ocr(&screen, &VARIANTS[..1])
            .map(|mut v| v.pop().unwrap_or_default())
    }

    /// The text on the display read three ways (scaled ×2 and ×3 and inverted, and ×2 as it is),
    /// as NixOS offers it: one of them often reads what another misreads.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let seen = vm.get_screen_text_variants()?;
    /// assert!(seen.iter().any(|t| t.contains("login:")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_screen_text_variants(&self) -> Result<Vec<String>, Error> {
        let _step = self.step("reading the screen (three variants)".into());
        let screen = self.screen_within(self.limit(None))?;
        self.ocr(&screen, &VARIANTS)
    }

    /// Waits until text matching `regex` is on the display (any variant), reading it again and
    /// again; the timeout error shows what was read last.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_text(r"login:", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_text(&self, regex: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let re = Regex::new(regex).map_err(|source| Error::Regex {
            pattern: regex.to_string(),
            source,
        })?;
        let _step = self.step(format!("waiting for text /{regex}/ on the screen"));
        let t0 = Instant::now();
        // OCR runs on the host; the guest only answers screendump.
        self.retry_paced(
            &format!("text /{regex}/ on the screen"),
            self.limit(timeout),
            0,
            |left, last| {
                let screen = self.screen_within(left)?;
                // The main variant first: most waits end there, at a third of the cost.
                for variants in [&VARIANTS[..1], &VARIANTS[1..]] {
                    let texts = self.ocr(&screen, variants)?;
                    *last = texts.join("\n---\n");
                    if texts.iter().any(|t| re.is_match(t)) {
                        log::info!(
                            "{}: text /{regex}/ seen after {:.2} s",
                            self.name,
                            t0.elapsed().as_secs_f64()
                        );
                        return Ok(Some(()));
                    }
                }
                Ok(None)
            },
        )
    }

    /// OCR of `screen` under each of `variants`.
    fn ocr(&self, screen: &Screen, variants: &[(u32, bool)]) -> Result<Vec<String>, Error> {
        let dir = self.state_dir()?;
        let t0 = Instant::now();
        let mut texts = Vec::new();
        for (k, &(scale, invert)) in variants.iter().enumerate() {
            let image = dir.join(format!("ocr-{k}.png"));
            write_grey_png(&image, &screen.for_ocr(scale, invert)).map_err(|source| Error::Io {
                what: format!("machine {}: writing {}", self.name, image.display()),
                source,
            })?;
            let text = tesseract(&image).map_err(|reason| Error::Monitor {
                machine: self.name.clone(),
                reason,
            })?;
            let _ = std::fs::remove_file(&image);
            texts.push(text);
        }
        log::debug!(
            "{}: OCR of {} variant(s) in {:.2} s",
            self.name,
            variants.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(texts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessing_scales_greys_and_inverts() {
        let s = Screen {
            width: 2,
            height: 1,
            rgb: vec![255, 255, 255, 0, 0, 0],
        };
        let (w, h, grey) = s.for_ocr(2, true);
        assert_eq!((w, h), (4, 2));
        assert_eq!(grey, [0, 0, 255, 255, 0, 0, 255, 255]);
        assert_eq!(s.for_ocr(1, false).2, [255, 0]);
    }
}
