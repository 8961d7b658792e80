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
/// Larger images are refused before their pixels are decoded (a small file can claim a
/// huge image).
const MAX_DECODED_SIDE: u32 = 8192;
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// A photo as stored: a JPEG without metadata, and its thumbnail.
#[derive(Debug, Clone)]
pub struct Photo {
    pub jpeg: Vec<u8>,
    pub thumbnail: Vec<u8>,
}

/// Why a photo was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnImage;

/// Decodes a JPEG, PNG, GIF or WebP image and encodes it again without metadata, scaled
/// down to [`MAX_PHOTO_SIDE`], with its [`THUMBNAIL_SIDE`] thumbnail.
pub fn photo_from_upload(bytes: &[u8]) -> Result<Photo, NotAnImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| NotAnImage)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|_| NotAnImage)?;
    let stored = if image.width() > MAX_PHOTO_SIDE || image.height() > MAX_PHOTO_SIDE {
        image.resize(MAX_PHOTO_SIDE, MAX_PHOTO_SIDE, FilterType::Triangle)
    } else {
        image
    };
    let thumbnail = stored.resize_to_fill(THUMBNAIL_SIDE, THUMBNAIL_SIDE, FilterType::Triangle);
    Ok(Photo { jpeg: jpeg(&stored, 85)?, thumbnail: jpeg(&thumbnail, 50)? })
}

fn jpeg(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, NotAnImage> {
    let mut out = Vec::new();
    let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&rgb).map_err(|_| NotAnImage)?;
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
        let photo = photo_from_upload(&png(300, 200)).unwrap();
        let stored = image::load_from_memory(&photo.jpeg).unwrap();
        assert_eq!((stored.width(), stored.height()), (300, 200));
        assert_eq!(image::guess_format(&photo.jpeg).unwrap(), image::ImageFormat::Jpeg);
        let thumbnail = image::load_from_memory(&photo.thumbnail).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (THUMBNAIL_SIDE, THUMBNAIL_SIDE));
    }

    #[test]
    fn large_photos_are_scaled_down_and_text_is_refused() {
        let photo = photo_from_upload(&png(2048, 1024)).unwrap();
        let stored = image::load_from_memory(&photo.jpeg).unwrap();
        assert_eq!((stored.width(), stored.height()), (MAX_PHOTO_SIDE, MAX_PHOTO_SIDE / 2));
        assert_eq!(photo_from_upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap_err(), NotAnImage);
        assert_eq!(photo_from_upload(&png(300, 200)[..100]).unwrap_err(), NotAnImage, "a cut file");
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
