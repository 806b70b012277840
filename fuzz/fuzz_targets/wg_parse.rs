//! Parses arbitrary text as both WireGuard file formats. Whatever parses must render and
//! parse back to the same model, and the rendering must be stable (render → parse → render
//! gives the same text); no input may make the parser panic.
#![no_main]

use kokoa_wg::{Config, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::WgQuick, Format::SetConf] {
        let Ok(config) = Config::parse(text, format) else {
            continue;
        };
        let rendered = config.render(format);
        let again = Config::parse(&rendered, format)
            .unwrap_or_else(|e| panic!("rendered {format:?} file does not parse: {e}\n{rendered}"));
        assert_eq!(again, config, "{format:?} round trip changed the model");
        assert_eq!(
            again.render(format),
            rendered,
            "{format:?} rendering is not stable"
        );
    }
});
