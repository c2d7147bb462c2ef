//! The machine's display: QEMU's `screendump` (PPM) read back as pixels, written as PNG.

use crate::{Error, Machine};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A picture of the display: 8-bit RGB pixels, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` RGB triples, top row first.
    pub rgb: Vec<u8>,
}

impl Screen {
    /// Parses a binary PPM (`P6`, maxval 255), the format of QEMU's `screendump`.
    ///
    /// ```
    /// let s = driver::Screen::from_ppm(b"P6\n2 1\n255\n\xff\0\0\0\0\xff").unwrap();
    /// assert_eq!((s.width, s.height, s.rgb.len()), (2, 1, 6));
    /// ```
    pub fn from_ppm(bytes: &[u8]) -> Result<Screen, String> {
        // Header: magic, width, height, maxval, separated by whitespace (comments start with '#'),
        // then exactly one whitespace byte before the pixels.
        let mut fields = Vec::new();
        let mut pos = 0;
        while fields.len() < 4 {
            while pos < bytes.len() && (bytes[pos].is_ascii_whitespace() || bytes[pos] == b'#') {
                if bytes[pos] == b'#' {
                    while pos < bytes.len() && bytes[pos] != b'\n' {
                        pos += 1;
                    }
                } else {
                    pos += 1;
                }
            }
            let start = pos;
            while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if start == pos {
                return Err("PPM header ends early".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..pos]).into_owned());
        }
        if fields[0] != "P6" {
            return Err(format!("not a binary PPM (magic {:?})", fields[0]));
        }
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("bad PPM header field {s:?}"))
        };
        let (width, height, maxval) = (
            number(&fields[1])?,
            number(&fields[2])?,
            number(&fields[3])?,
        );
        if maxval != 255 {
            return Err(format!("PPM maxval {maxval}, expected 255"));
        }
        let size = width as usize * height as usize * 3;
        let pixels = bytes.get(pos + 1..).unwrap_or_default();
        if pixels.len() < size {
            return Err(format!(
                "PPM of {width}x{height} holds {} pixel bytes, expected {size}",
                pixels.len()
            ));
        }
        Ok(Screen {
            width,
            height,
            rgb: pixels[..size].to_vec(),
        })
    }

    /// Writes the picture as a PNG file.
    pub fn write_png(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_png(
            path,
            self.width,
            self.height,
            png::ColorType::Rgb,
            &self.rgb,
        )
    }
}

/// Writes 8-bit pixels of `color` as a PNG file.
pub(crate) fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    pixels: &[u8],
) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(pixels)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

impl Machine {
    /// Takes a screenshot of the display as PNG into `path`, with the monitor given `limit`.
    pub(crate) fn screenshot_within(&self, path: &Path, limit: Duration) -> Result<(), Error> {
        let image = self.screen_within(limit)?;
        image.write_png(path).map_err(|source| Error::Io {
            what: format!("machine {}: writing {}", self.name, path.display()),
            source,
        })?;
        let core = self.core.borrow();
        let recorder = core.activity.recorder();
        let event = crate::record::MachineEvent::Screenshot {
            t: recorder.now(),
            path: path.to_path_buf(),
        };
        recorder.event(&self.name, event);
        Ok(())
    }

    /// Saves the display as PNG: a relative name goes into the output directory (the current one
    /// if none was set), `.png` added when it has no extension (as NixOS does); an absolute path is
    /// used as given. Returns where it went.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let png = vm.screenshot("after-login")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn screenshot(&self, name: &str) -> Result<PathBuf, Error> {
        let mut path = PathBuf::from(name);
        if path.extension().is_none() {
            path.set_extension("png");
        }
        if path.is_relative() {
            let dir = self.core.borrow().output_dir.clone().unwrap_or_default();
            path = dir.join(path);
        }
        let _step = self.step(format!("screenshot {}", path.display()));
        self.screenshot_within(&path, self.limit(None))?;
        Ok(path)
    }

    /// The display's pixels now.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let screen = vm.screen()?;
    /// println!("{}x{}", screen.width, screen.height);
    /// # Ok(())
    /// # }
    /// ```
    pub fn screen(&self) -> Result<Screen, Error> {
        self.screen_within(self.limit(None))
    }

    pub(crate) fn screen_within(&self, limit: Duration) -> Result<Screen, Error> {
        let dir = self.state_dir()?;
        let ppm = dir.join("screen.ppm");
        let _ = std::fs::remove_file(&ppm);
        let reply = self.monitor_within(&format!("screendump {}", hmp_quote(&ppm)), limit)?;
        let monitor_err = |reason: String| Error::Monitor {
            machine: self.name.clone(),
            reason,
        };
        let bytes = match std::fs::read(&ppm) {
            Ok(b) => b,
            // QEMU answers in words when it has nothing to dump.
            Err(_) if reply.trim().is_empty() => {
                return Err(monitor_err("screendump wrote no file".into()))
            }
            Err(_) => {
                return Err(monitor_err(format!(
                    "no display to take a screenshot of: {}",
                    reply.trim()
                )))
            }
        };
        let _ = std::fs::remove_file(&ppm);
        Screen::from_ppm(&bytes).map_err(|e| monitor_err(format!("screendump: {e}")))
    }
}

/// A string argument for HMP: double-quoted, with `\` and `"` escaped.
fn hmp_quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_with_comment_parses_and_short_or_foreign_input_is_refused() {
        let s = Screen::from_ppm(b"P6 # made by QEMU\n1 2\n255\n\x01\x02\x03\x04\x05\x06").unwrap();
        assert_eq!((s.width, s.height), (1, 2));
        assert_eq!(s.rgb, [1, 2, 3, 4, 5, 6]);
        assert!(Screen::from_ppm(b"P6\n2 2\n255\n\0\0\0")
            .unwrap_err()
            .contains("expected 12"));
        assert!(Screen::from_ppm(b"P3\n1 1\n255\n0 0 0")
            .unwrap_err()
            .contains("magic"));
        assert!(Screen::from_ppm(b"P6\n1")
            .unwrap_err()
            .contains("ends early"));
        assert!(Screen::from_ppm(b"P6\n1 1\n65535\n")
            .unwrap_err()
            .contains("maxval"));
    }

    #[test]
    fn png_round_trips() {
        let s = Screen {
            width: 2,
            height: 1,
            rgb: vec![255, 0, 0, 0, 0, 255],
        };
        let path = std::env::temp_dir().join(format!("vmtd-screen-{}.png", std::process::id()));
        s.write_png(&path).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(&buf[..6], &s.rgb[..]);
        std::fs::remove_file(&path).unwrap();
    }
}
