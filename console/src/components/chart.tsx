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
}

export function Chart({ title, data, series, height = 200, bars = false, testId, yRange }: ChartProps) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const width = Math.max(320, element.clientWidth || 600);
    const paths = bars ? uPlot.paths.bars!({ size: [0.6, 40], align: 0 }) : undefined;
    const plot = new uPlot(
      {
        title,
        width,
        height,
        scales: { x: { time: true }, ...(yRange ? { y: { range: yRange } } : {}) },
        series: [{}, ...series.map((s) => (paths ? { paths, points: { show: false }, ...s } : s))],
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
  }, [JSON.stringify(data), title, height, bars]);
  return <div class="chart" ref={host} data-testid={testId} />;
}
