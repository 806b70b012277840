//! Aligned text tables of API objects.

use serde_json::Value;

/// One column: its heading and the field of each object it shows.
pub(crate) type Column = (&'static str, &'static str);

/// A table of `rows` with a heading line; columns are separated by two spaces and padded
/// to their widest cell (the last one is not padded).
pub(crate) fn render(rows: &[Value], columns: &[Column]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(columns.iter().map(|c| c.0.to_owned()).collect())
        .chain(
            rows.iter()
                .map(|row| columns.iter().map(|c| cell(&row[c.1])).collect()),
        )
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, text) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(text);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[i] - text.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A value as one cell: strings as they are, `-` for nothing.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        // Cells hold one line: a value with a line break would break the alignment.
        Value::String(s) => s.replace(['\n', '\r', '\t'], " "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = [
            json!({"id": "rt_1", "hostname": "app.hoge.com", "port": 8080}),
            json!({"id": "rt_22", "hostname": "w.fuga.com", "port": null}),
        ];
        let text = render(
            &rows,
            &[("ID", "id"), ("HOSTNAME", "hostname"), ("PORT", "port")],
        );
        assert_eq!(
            text,
            "ID     HOSTNAME      PORT\n\
             rt_1   app.hoge.com  8080\n\
             rt_22  w.fuga.com    -\n"
        );
    }
}
