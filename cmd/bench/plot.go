package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// plot draws the median replay's throughput over time, with the baselines measured in
// the same run as horizontal lines.
func plot(path string, r Result) error {
	const w, h, left, right, top, bottom = 960, 480, 80, 270, 40, 50
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)
	var maxT, maxY float64
	for _, p := range r.Series {
		maxT, maxY = max(maxT, p.Seconds), max(maxY, p.EventsPerSec)
	}
	rp := r.Replay
	for _, v := range []float64{rp.RawConsumePerSec, rp.CopyRowsPerSec, rp.NaiveEventsPerSec, rp.EventsPerSec} {
		maxY = max(maxY, v)
	}
	if maxT == 0 || maxY == 0 {
		maxT, maxY = 1, 1
	}
	maxY *= 1.1
	x := func(t float64) int { return left + int(t/maxT*float64(w-left-right)) }
	y := func(v float64) int { return h - bottom - int(v/maxY*float64(h-top-bottom)) }
	grey := color.RGBA{200, 200, 200, 255}
	black := color.RGBA{40, 40, 40, 255}
	line(img, left, y(0), w-right, y(0), black)
	line(img, left, y(0), left, top, black)
	for i := 1; i <= 4; i++ {
		v := maxY / 1.1 * float64(i) / 4
		line(img, left, y(v), w-right, y(v), grey)
		text(img, 4, y(v)+4, fmt.Sprintf("%.0fk/s", v/1000), black)
	}
	text(img, left, h-bottom+20, "0 s", black)
	text(img, w-right-40, h-bottom+20, fmt.Sprintf("%.0f s", maxT), black)
	text(img, left, 20, fmt.Sprintf("replay of %d events: events/s over time (median run), baselines from the same run", rp.Events), black)
	baselines := []struct {
		name string
		v    float64
		c    color.RGBA
	}{
		{"raw kafka-go consume", rp.RawConsumePerSec, color.RGBA{46, 160, 67, 255}},
		{"COPY of the final rows", rp.CopyRowsPerSec, color.RGBA{200, 120, 0, 255}},
		{"projector (median)", rp.EventsPerSec, color.RGBA{59, 130, 246, 255}},
		{"naive consumer", rp.NaiveEventsPerSec, color.RGBA{200, 40, 40, 255}},
	}
	for i, b := range baselines {
		dashed(img, left, y(b.v), w-right, b.c)
		text(img, w-right+10, top+20+18*i, fmt.Sprintf("%s %.0f/s", b.name, b.v), b.c)
	}
	blue := color.RGBA{20, 80, 200, 255}
	for i := 1; i < len(r.Series); i++ {
		a, b := r.Series[i-1], r.Series[i]
		line(img, x(a.Seconds), y(a.EventsPerSec), x(b.Seconds), y(b.EventsPerSec), blue)
		line(img, x(a.Seconds), y(a.EventsPerSec)+1, x(b.Seconds), y(b.EventsPerSec)+1, blue)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	return png.Encode(f, img)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e // both steps decide on the error before either moves
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func dashed(img *image.RGBA, x0, y, x1 int, c color.Color) {
	for x := x0; x < x1; x += 10 {
		line(img, x, y, min(x+6, x1), y, c)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
