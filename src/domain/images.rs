//! Photos and uploaded files: what is kept of them and how they may be served.
//!
//! A photo is decoded and encoded again as a JPEG: only pixels survive, so metadata
//! such as a GPS position or a camera serial never reaches the disk or other users.
//! Any other file keeps its bytes, and is served under a content type from a short list
//! of types that browsers cannot run.

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use std::io::Cursor;

/// Photos are kept at most this many pixels on a side.
pub const MAX_PHOTO_SIDE: u32 = 1024;
/// The thumbnail the apps show in lists: a centre-cropped square.
pub const THUMBNAIL_SIDE: u32 = 100;
/// What a decoder may allocate per pixel of the image its header announces: an 8-bit
/// RGBA image needs 4 bytes; a 16-bit one, which needs more, counts as that many more pixels.
const DECODE_BYTES_PER_PIXEL: u64 = 4;

/// A photo as stored: a JPEG without metadata, and its thumbnail.
#[derive(Debug, Clone)]
pub struct Photo {
    pub jpeg: Vec<u8>,
    pub thumbnail: Vec<u8>,
}

/// Why a photo was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoRefused {
    /// Not a JPEG, PNG, GIF or WebP image, or a damaged one.
    NotAnImage,
    /// More pixels than allowed (a small file can claim a huge image): refused from its
    /// header, before any pixel is decoded.
    TooManyPixels { width: u32, height: u32 },
}

/// Decodes a JPEG, PNG, GIF or WebP image of at most `max_pixels` pixels and encodes it
/// again without metadata, scaled down to [`MAX_PHOTO_SIDE`], with its
/// [`THUMBNAIL_SIDE`] thumbnail.
pub fn photo_from_upload(bytes: &[u8], max_pixels: u64) -> Result<Photo, PhotoRefused> {
    let reader = || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| PhotoRefused::NotAnImage);
    let (width, height) = reader()?.into_dimensions().map_err(|_| PhotoRefused::NotAnImage)?;
    let too_many_pixels = PhotoRefused::TooManyPixels { width, height };
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(too_many_pixels);
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    // The decoder must not meet a larger image than its header announced.
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(DECODE_BYTES_PER_PIXEL));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_many_pixels,
        _ => PhotoRefused::NotAnImage,
    })?;
    let stored = if image.width() > MAX_PHOTO_SIDE || image.height() > MAX_PHOTO_SIDE {
        // Averages source pixels into the small image directly: a filtered resize would
        // first build an intermediate image of floats as tall as the source.
        image.thumbnail(MAX_PHOTO_SIDE, MAX_PHOTO_SIDE)
    } else {
        image
    };
    let thumbnail = stored.resize_to_fill(THUMBNAIL_SIDE, THUMBNAIL_SIDE, FilterType::Triangle);
    Ok(Photo { jpeg: jpeg(&stored, 85)?, thumbnail: jpeg(&thumbnail, 50)? })
}

fn jpeg(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, PhotoRefused> {
    let mut out = Vec::new();
    let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&rgb).map_err(|_| PhotoRefused::NotAnImage)?;
    Ok(out)
}

/// Extensions of uploaded files that are served with their own content type; every
/// other file is served as `application/octet-stream`, as a download.
const INLINE_TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("mp4", "video/mp4"),
    ("3gp", "video/3gpp"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("amr", "audio/amr"),
    ("pdf", "application/pdf"),
];

/// The extension a stored file gets from the name the app gave it: one of
/// [`INLINE_TYPES`] (`jpeg` counts as `jpg`), or else `bin`.
pub fn stored_extension(client_file_name: &str) -> &'static str {
    let extension = client_file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let extension = if extension == "jpeg" { "jpg".to_string() } else { extension };
    INLINE_TYPES.iter().find(|(known, _)| *known == extension).map_or("bin", |(known, _)| known)
}

/// The content type a stored file is served with, and whether it may be shown inline.
pub fn served_type(extension: &str) -> (&'static str, bool) {
    match INLINE_TYPES.iter().find(|(known, _)| *known == extension) {
        Some((_, content_type)) => (content_type, true),
        None => ("application/octet-stream", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn a_photo_becomes_a_jpeg_with_a_square_thumbnail() {
        let photo = photo_from_upload(&png(300, 200), 300 * 200).unwrap();
        let stored = image::load_from_memory(&photo.jpeg).unwrap();
        assert_eq!((stored.width(), stored.height()), (300, 200));
        assert_eq!(image::guess_format(&photo.jpeg).unwrap(), image::ImageFormat::Jpeg);
        let thumbnail = image::load_from_memory(&photo.thumbnail).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (THUMBNAIL_SIDE, THUMBNAIL_SIDE));
    }

    #[test]
    fn large_photos_are_scaled_down_and_text_is_refused() {
        let photo = photo_from_upload(&png(2048, 1024), MANY).unwrap();
        let stored = image::load_from_memory(&photo.jpeg).unwrap();
        assert_eq!((stored.width(), stored.height()), (MAX_PHOTO_SIDE, MAX_PHOTO_SIDE / 2));
        let svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>";
        assert_eq!(photo_from_upload(svg, MANY).unwrap_err(), PhotoRefused::NotAnImage);
        assert_eq!(photo_from_upload(&png(300, 200)[..100], MANY).unwrap_err(), PhotoRefused::NotAnImage, "a cut file");
    }

    const MANY: u64 = 50_000_000;

    /// A small JPEG whose frame header claims `width` × `height` pixels.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(16, 16)).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
        let frame = out.windows(2).position(|marker| marker == [0xFF, 0xC0]).expect("a baseline frame header");
        out[frame + 5..frame + 7].copy_from_slice(&height.to_be_bytes());
        out[frame + 7..frame + 9].copy_from_slice(&width.to_be_bytes());
        out
    }

    #[test]
    fn a_photo_of_more_pixels_than_allowed_is_refused_from_its_header() {
        assert!(photo_from_upload(&png(100, 100), 100 * 100).is_ok(), "at the bound");
        let over = PhotoRefused::TooManyPixels { width: 101, height: 100 };
        assert_eq!(photo_from_upload(&png(101, 100), 100 * 100).unwrap_err(), over);
        // The header lies (the data is of 16 × 16 pixels), so only a refusal from the header
        // names the size: a decode would have failed on the data.
        assert_eq!(photo_from_upload(&jpeg_claiming(101, 100), 100 * 100).unwrap_err(), over);
        let huge = jpeg_claiming(8192, 8192);
        assert!(huge.len() < 4096);
        assert_eq!(photo_from_upload(&huge, MANY).unwrap_err(), PhotoRefused::TooManyPixels { width: 8192, height: 8192 });
    }

    #[test]
    fn only_listed_types_are_served_as_themselves() {
        assert_eq!(stored_extension("IMG_1.JPEG"), "jpg");
        assert_eq!(stored_extension("clip.mp4"), "mp4");
        for risky in ["page.html", "x.svg", "a.js", "noextension", "archive.tar.gz"] {
            assert_eq!(stored_extension(risky), "bin", "{risky}");
        }
        assert_eq!(served_type("pdf"), ("application/pdf", true));
        assert_eq!(served_type("bin"), ("application/octet-stream", false));
    }
}
