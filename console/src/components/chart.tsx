/** uPlot charts: a thin Preact wrapper that rebuilds the plot when its data changes. */

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartProps {
  title?: string;
  /** x values (Unix seconds) then one array per series. */
  data: uPlot.AlignedData;
  series: uPlot.Series[];
  height?: number;
  bars?: boolean;
  testId?: string;
  yRange?: [number, number];
  /** The x axis span (Unix seconds), e.g. the summarized time range; default: the data's. */
  xRange?: [number, number];
}

export function Chart({ title, data, series, height = 200, bars = false, testId, yRange, xRange }: ChartProps) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const width = Math.max(320, element.clientWidth || 600);
    // Bars: the series side by side around each x (the first left of it, the next right).
    const barsOf = (index: number) =>
      uPlot.paths.bars!({ size: [0.4, 24], align: series.length > 1 ? (index === 0 ? -1 : 1) : 0 });
    const plot = new uPlot(
      {
        title,
        width,
        height,
        scales: {
          x: { time: true, ...(xRange ? { range: xRange } : {}) },
          y: yRange ? { range: yRange } : bars ? { range: (_u, _min, max) => [0, Math.max(1, max)] } : {},
        },
        series: [{}, ...series.map((s, i) => (bars ? { paths: barsOf(i), points: { show: false }, ...s } : s))],
        axes: [{}, { size: 50 }],
        legend: { show: true },
      },
      data,
      element,
    );
    const resize = () => plot.setSize({ width: Math.max(320, element.clientWidth), height });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [JSON.stringify(data), JSON.stringify(xRange), title, height, bars]);
  return <div class="chart" ref={host} data-testid={testId} />;
}
