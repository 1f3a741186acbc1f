//! `kldiv bench --plot`: throughput against row length as an SVG (plotters). One series per
//! placement × input form (× element type, × "one row" in a sweep), markers at every
//! measurement, lines only between neighbouring measured lengths (never across unmeasured
//! decades), labelled axes, the legend beside the chart, and a caption naming the machine.

use kldiv::{Dtype, InputForm};
use plotters::prelude::*;

/// One measured point.
pub struct Point {
    pub placement: String,
    pub input: InputForm,
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
    pub gelem: f64,
}

/// Neighbouring measurements further apart than this factor in row length are not joined.
const JOIN_RATIO: f64 = 20.0;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn form_name(input: InputForm) -> &'static str {
    match input {
        InputForm::Probabilities => "probabilities",
        InputForm::LogProbabilities => "log-probabilities",
        InputForm::Logits => "logits",
    }
}

/// A tick label with the digits a log axis needs (0.0001, 0.25, 3, 2000000).
fn tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-v.log10()).ceil().max(0.0) as usize + 1;
        format!("{v:.digits$}")
    }
}

/// The chart as SVG text. `caption` names the machine (CPU and GPU).
pub fn svg(points: &[Point], title: &str, caption: &str) -> Result<String, String> {
    let mut out = String::new();
    draw(points, title, caption, &mut out).map_err(|e| format!("drawing the chart: {e}"))?;
    Ok(out)
}

fn draw(
    points: &[Point],
    title: &str,
    caption: &str,
    out: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let pts: Vec<&Point> = points
        .iter()
        .filter(|p| p.gelem.is_finite() && p.gelem > 0.0)
        .collect();
    if pts.is_empty() {
        return Err("no measurements to draw".into());
    }
    // A sweep measures each length with one row and with many, over several forms and
    // element types: one panel per form × type, one series per placement × row count.
    // The workloads W1–W4 are one panel whose markers tell the forms apart.
    let sweep = pts.iter().any(|p| p.rows == 1) && pts.iter().any(|p| p.rows > 1);
    let mut panels: Vec<(InputForm, Dtype)> = vec![];
    let mut placements: Vec<String> = vec![];
    for p in &pts {
        if sweep && !panels.contains(&(p.input, p.dtype)) {
            panels.push((p.input, p.dtype));
        }
        if !placements.contains(&p.placement) {
            placements.push(p.placement.clone());
        }
    }
    let (xmin, xmax) = bounds(pts.iter().map(|p| p.cols as f64));
    let (ymin, ymax) = bounds(pts.iter().map(|p| p.gelem));
    let color_of = |placement: &str| {
        COLORS[placements.iter().position(|p| p == placement).unwrap_or(0) % COLORS.len()]
    };

    let root =
        SVGBackend::with_string(out, (1000, if sweep { 820 } else { 560 })).into_drawing_area();
    root.fill(&WHITE)?;
    let (_, h) = root.dim_in_pixel();
    let (main, foot) = root.split_vertically(h - 28);
    foot.draw(&Text::new(caption.to_string(), (12, 8), ("sans-serif", 13)))?;
    let (plots, legend) = main.split_horizontally(760);
    let plots = plots.titled(title, ("sans-serif", 18))?;
    let areas = if sweep {
        plots.split_evenly((panels.len().div_ceil(2), 2.min(panels.len())))
    } else {
        vec![plots]
    };
    let panel_list: Vec<Option<(InputForm, Dtype)>> = if sweep {
        panels.iter().copied().map(Some).collect()
    } else {
        vec![None]
    };
    for (area, panel) in areas.iter().zip(&panel_list) {
        let mut chart = ChartBuilder::on(area);
        if let Some((form, dtype)) = panel {
            chart.caption(
                format!("{} · {dtype}", form_name(*form)),
                ("sans-serif", 14),
            );
        }
        let mut chart = chart
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(
                (xmin / 1.5..xmax * 1.5).log_scale(),
                (ymin / 1.5..ymax * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("columns per row (log scale)")
            .y_desc("Gelem/s (log scale)")
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .draw()?;
        let mine: Vec<&&Point> = pts
            .iter()
            .filter(|p| panel.is_none_or(|(f, d)| p.input == f && p.dtype == d))
            .collect();
        for placement in &placements {
            let color = color_of(placement);
            for input in [
                InputForm::Probabilities,
                InputForm::LogProbabilities,
                InputForm::Logits,
            ] {
                for one_row in [false, true] {
                    let mut xy: Vec<(f64, f64)> = mine
                        .iter()
                        .filter(|p| {
                            &p.placement == placement
                                && p.input == input
                                && (sweep && p.rows == 1) == one_row
                        })
                        .map(|p| (p.cols as f64, p.gelem))
                        .collect();
                    xy.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let line = if one_row {
                        color.stroke_width(1)
                    } else {
                        color.stroke_width(2)
                    };
                    for w in xy.windows(2) {
                        if w[1].0 / w[0].0 <= JOIN_RATIO {
                            chart.draw_series(LineSeries::new(w.iter().copied(), line))?;
                        }
                    }
                    let style = if one_row {
                        color.stroke_width(2)
                    } else {
                        color.filled()
                    };
                    for &(x, y) in &xy {
                        if input == InputForm::Probabilities {
                            chart.draw_series(std::iter::once(Circle::new((x, y), 4, style)))?;
                        } else {
                            chart.draw_series(std::iter::once(TriangleMarker::new(
                                (x, y),
                                6,
                                style,
                            )))?;
                        }
                    }
                }
            }
        }
    }
    // The legend beside the charts, never over the data.
    let mut y = 40;
    for placement in &placements {
        let color = color_of(placement);
        legend.draw(&Rectangle::new([(8, y - 5), (20, y + 5)], color.filled()))?;
        legend.draw(&Text::new(
            placement.clone(),
            (28, y - 7),
            ("sans-serif", 13),
        ))?;
        y += 20;
    }
    y += 10;
    let grey = RGBColor(90, 90, 90);
    let keys: Vec<(&str, bool, bool)> = if sweep {
        vec![
            ("many rows", false, false),
            ("one row (thin line)", true, false),
        ]
    } else {
        vec![("probabilities", false, false), ("logits", false, true)]
    };
    for (text, hollow, triangle) in keys {
        let style = if hollow {
            grey.stroke_width(2)
        } else {
            grey.filled()
        };
        if triangle {
            legend.draw(&TriangleMarker::new((14, y), 6, style))?;
        } else {
            legend.draw(&Circle::new((14, y), 4, style))?;
        }
        legend.draw(&Text::new(
            text.to_string(),
            (28, y - 7),
            ("sans-serif", 13),
        ))?;
        y += 20;
    }
    if sweep {
        legend.draw(&Text::new(
            "● probabilities  ▲ logits".to_string(),
            (8, y),
            ("sans-serif", 13),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(placement: &str, input: InputForm, rows: usize, cols: usize, g: f64) -> Point {
        Point {
            placement: placement.into(),
            input,
            dtype: Dtype::F32,
            rows,
            cols,
            gelem: g,
        }
    }

    #[test]
    fn one_series_per_placement_and_form_with_axes_and_caption() {
        let pts = vec![
            point("cpu-simd", InputForm::Probabilities, 4096, 32_000, 3.7),
            point("cpu-simd", InputForm::Probabilities, 64, 2_000_000, 3.8),
            point("cpu-simd", InputForm::Logits, 1024, 128_256, 1.7),
            point("gpu", InputForm::Probabilities, 4096, 32_000, 0.05),
        ];
        let s = svg(&pts, "kldiv bench", "CPU: test cpu; GPU: test gpu").unwrap();
        assert!(s.starts_with("<svg"));
        for needle in [
            "columns per row",
            "Gelem/s",
            "CPU: test cpu; GPU: test gpu",
            "cpu-simd",
            "gpu",
            "probabilities",
            "logits",
        ] {
            assert!(s.contains(needle), "missing {needle}");
        }
        // Data lines are drawn in the placement's colour (the mesh in black): 32000 → 2M is
        // more than 20× apart, so no line joins them.
        let data_lines = |svg: &str| {
            svg.split("<polyline")
                .skip(1)
                .filter(|l| l.contains("stroke=\"#1F77B4\""))
                .count()
        };
        assert_eq!(data_lines(&s), 0, "a line crosses unmeasured lengths");
        // A neighbour 2× away is joined.
        let mut near = pts;
        near.push(point(
            "cpu-simd",
            InputForm::Probabilities,
            2048,
            64_000,
            3.6,
        ));
        let s = svg(&near, "kldiv bench", "c").unwrap();
        assert_eq!(data_lines(&s), 1);
        assert!(svg(&[], "t", "c").is_err());
    }
}
