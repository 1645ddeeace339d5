//! A local target's shift, bake bound and preview host.

use super::*;

#[test]
fn local_shift_keys_default_to_the_constants() {
    let local = local_target(&parse(HELLO), DEFAULT_TARGET_NAME);
    assert_eq!(local.shift, crate::shift::DEFAULT_SHIFT);
    assert_eq!(local.max_error_rate, crate::shift::DEFAULT_MAX_ERROR_RATE);
    assert_eq!(local.preview_host, None);
    assert_eq!(local.keep_images, crate::config::DEFAULT_KEEP_IMAGES);
}

#[test]
fn keep_images_is_read_and_must_keep_the_live_and_rollback_images() {
    let config = parse(&format!("{HELLO}[targets.edge]\nkeep_images = 3\n"));
    assert_eq!(local_target(&config, "edge").keep_images, 3);
    let config = parse(&format!(
        "{HELLO}[targets.edge]\nkeep_images = {}\n",
        crate::config::MIN_KEEP_IMAGES
    ));
    assert_eq!(
        local_target(&config, "edge").keep_images,
        crate::config::MIN_KEEP_IMAGES
    );
    let error = parse_err(&format!("{HELLO}[targets.edge]\nkeep_images = 1\n"));
    assert_at(&error, "targets.edge.keep_images", "at least 2");
    assert_hints(&error, "or set 2 or more");
    for bad in ["0", "-3", "\"many\"", "2.5"] {
        let error = parse_err(&format!("{HELLO}[targets.edge]\nkeep_images = {bad}\n"));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.edge.keep_images"),
            "{bad}: {}",
            error.message
        );
    }
}

#[test]
fn local_shift_keys_are_read() {
    let config = parse(&format!(
        "{HELLO}[targets.edge]\nshift = \"linear:25:30s\"\nmax_error_rate = \"5%\"\n\
         preview_host = \"Preview.Example.com\"\n"
    ));
    let local = local_target(&config, "edge");
    assert_eq!(
        local.shift,
        crate::shift::ShiftStrategy::Linear {
            percent: 25,
            interval: Duration::from_secs(30)
        }
    );
    assert!((local.max_error_rate - 0.05).abs() < 1e-12);
    assert_eq!(local.preview_host.as_deref(), Some("preview.example.com"));

    for (written, rate) in [("0", 0.0), ("1", 1.0), ("0.25", 0.25), ("\"0.5\"", 0.5)] {
        let config = parse(&format!(
            "{HELLO}[targets.edge]\nmax_error_rate = {written}\n"
        ));
        assert_eq!(
            local_target(&config, "edge").max_error_rate,
            rate,
            "{written}"
        );
    }
    let config = parse_with(
        &format!("{HELLO}[targets.edge]\nshift = \"${{SHIFT:-all-at-once}}\"\n"),
        &[("SHIFT", "canary:10:2m")],
    )
    .expect("config loads");
    assert_eq!(
        local_target(&config, "edge").shift.to_string(),
        "canary:10:2m"
    );
}

#[test]
fn bad_shift_reports_key_path_position_and_the_forms() {
    let error = parse_err(&format!(
        "{HELLO}[targets.edge]\nshift = \"canary:150:5m\"\n"
    ));
    assert_at(&error, "targets.edge.shift", "from 1 to 99");
    assert_eq!(position(&error), (Some(4), Some(9)));
    assert_says(&error, "linear:<percent>:<interval>");
    let error = parse_err(&format!("{HELLO}[targets.edge]\nshift = 25\n"));
    assert_eq!(error.key.as_deref(), Some("targets.edge.shift"));
}

#[test]
fn max_error_rate_must_be_a_fraction() {
    for bad in ["1.5", "-0.1", "\"150%\"", "\"lots\"", "true"] {
        let error = parse_err(&format!("{HELLO}[targets.edge]\nmax_error_rate = {bad}\n"));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.edge.max_error_rate"),
            "{bad}"
        );
        assert!(
            error.message.contains("a fraction from 0 to 1"),
            "{bad}: {}",
            error.message
        );
    }
}

#[test]
fn preview_host_must_be_a_bare_host_name() {
    for bad in [
        "http://preview.example.com",
        "preview.example.com:8080",
        "a b",
        "-x.com",
    ] {
        let error = parse_err(&format!(
            "{HELLO}[targets.edge]\npreview_host = \"{bad}\"\n"
        ));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.edge.preview_host"),
            "{bad}"
        );
        assert_hints(&error, "without http://");
    }
    let blank = parse(&format!(
        "{HELLO}[targets.edge]\npreview_host = \"${{PREVIEW:-}}\"\n"
    ));
    assert_eq!(local_target(&blank, "edge").preview_host, None);
}
