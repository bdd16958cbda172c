// Testbench of soc_top (the engine behind its DMA front end, with its memory in HDL): the
// clock, the host and the watchdog in Verilog, no Python while it runs. Verilog-2005 for
// Icarus Verilog 11 (iverilog -g2005) and Verilator 5 (--binary --timing).
//
// The host resets the SoC, then writes over AXI4-Lite (a clocked sequence of transfers, the
// tasks `write` and `read`) Q_IRQ_ENABLE = 1, Q_HEAD = +head, and for each of +runs runs:
// Q_CTRL.run, waits for irq, reads Q_STATUS and Q_CYCLES and prints
//   QUEUE run=<i> status=<hex Q_STATUS> error=<Q_STATUS.q_error> cycles=<Q_CYCLES>
// stopping after a run that ended with an error. Then it pulses `dump` (the RAM writes itself
// to +dump=<file>), prints
//   DONE runs=<runs done> cycles=<cycles from the end of reset to the dump>
// and calls $finish. The watchdog ends the simulation with $fatal and a TIMEOUT line naming
// what the bench waited for when +timeout cycles have passed since reset.
//
// Plusargs: +mem=<file> (the memory image, $readmemh: sim/memory_image.py), +head=<hex>
// (the first descriptor's address, required), +dump=<file>, +runs=<n> (default 1; every run
// reads the same image and writes the same outputs), +timeout=<cycles> (default 10000000).
module tb_soc;
  // rtl/dma_regs.py: QUEUE_BASE + offsets, and Q_STATUS's fields.
  localparam [8:0] Q_CTRL = 9'h100, Q_STATUS = 9'h104, Q_HEAD = 9'h108,
                   Q_IRQ_ENABLE = 9'h114, Q_CYCLES = 9'h120;
  localparam Q_ERROR_LSB = 8, Q_ERROR_W = 4;
  localparam [1:0] OKAY = 2'b00;
  localparam RESET_CYCLES = 4;

  reg clk = 1'b0;
  reg rst = 1'b1;
  reg dump = 1'b0;
  always #5 clk = ~clk;

  reg  [8:0]  s_axil_awaddr = 0;
  reg         s_axil_awvalid = 1'b0;
  wire        s_axil_awready;
  reg  [31:0] s_axil_wdata = 0;
  reg         s_axil_wvalid = 1'b0;
  wire        s_axil_wready;
  wire [1:0]  s_axil_bresp;
  wire        s_axil_bvalid;
  reg         s_axil_bready = 1'b0;
  reg  [8:0]  s_axil_araddr = 0;
  reg         s_axil_arvalid = 1'b0;
  wire        s_axil_arready;
  wire [31:0] s_axil_rdata;
  wire [1:0]  s_axil_rresp;
  wire        s_axil_rvalid;
  reg         s_axil_rready = 1'b0;
  wire        irq;

  soc_top soc (
    .clk(clk), .rst(rst),
    .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(3'b000), .s_axil_awvalid(s_axil_awvalid),
    .s_axil_awready(s_axil_awready),
    .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(4'b1111), .s_axil_wvalid(s_axil_wvalid),
    .s_axil_wready(s_axil_wready),
    .s_axil_bresp(s_axil_bresp), .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready),
    .s_axil_araddr(s_axil_araddr), .s_axil_arprot(3'b000), .s_axil_arvalid(s_axil_arvalid),
    .s_axil_arready(s_axil_arready),
    .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
    .s_axil_rready(s_axil_rready),
    .irq(irq), .dump(dump)
  );

  // The reset, the cycles since its end, and the watchdog.
  reg [63:0] cycle = 0;
  reg [63:0] timeout;
  reg [8*32-1:0] phase = "reset";
  integer reset_left = RESET_CYCLES;
  always @(posedge clk) begin
    if (reset_left != 0) reset_left <= reset_left - 1;
    else rst <= 1'b0;
    if (!rst) cycle <= cycle + 1;
    if (cycle >= timeout)
      $fatal(1, "TIMEOUT: tb_soc: %0d cycles while %0s", cycle, phase);
  end

  // The host: a clocked sequence of AXI4-Lite transfers (every process of the bench drives on
  // the rising edge with nonblocking assignments, so Icarus and Verilator order them alike).
  // STEP_*: what the host does next; a transfer answered anything but OKAY ends the simulation.
  localparam STEP_IRQ_ENABLE = 0, STEP_HEAD = 1, STEP_RUN = 2, STEP_STATUS = 3,
             STEP_CYCLES_LO = 4, STEP_CYCLES_HI = 5, STEP_REPORT = 6, STEP_DUMP = 7;
  localparam S_RESET = 0, S_NEXT = 1, S_WRITE = 2, S_READ = 3, S_IRQ_LOW = 4, S_IRQ_HIGH = 5,
             S_DUMP = 6, S_FINISH = 7;
  integer state = S_RESET;
  integer step = STEP_IRQ_ENABLE;
  integer runs, run = 0;
  reg [31:0] head, status, cycles_lo, read_data;

  task write(input [8:0] addr, input [31:0] data);
    begin
      s_axil_awaddr <= addr;
      s_axil_awvalid <= 1'b1;
      s_axil_wdata <= data;
      s_axil_wvalid <= 1'b1;
      s_axil_bready <= 1'b1;
      state <= S_WRITE;
    end
  endtask

  task read(input [8:0] addr);
    begin
      s_axil_araddr <= addr;
      s_axil_arvalid <= 1'b1;
      s_axil_rready <= 1'b1;
      state <= S_READ;
    end
  endtask

  always @(posedge clk) begin
    case (state)
      S_RESET:
        if (!rst) begin state <= S_NEXT; phase <= "configuring"; end
      S_NEXT: begin
        step <= step + 1;
        case (step)
          STEP_IRQ_ENABLE: write(Q_IRQ_ENABLE, 32'd1);
          STEP_HEAD: write(Q_HEAD, head);
          STEP_RUN: begin
            write(Q_CTRL, 32'd1);           // run: it clears done, and irq with it
            phase <= "running the queue";
          end
          STEP_STATUS: begin
            read(Q_STATUS);
            phase <= "reading the status";
          end
          STEP_CYCLES_LO: begin
            status <= read_data;
            read(Q_CYCLES);
          end
          STEP_CYCLES_HI: begin
            cycles_lo <= read_data;
            read(Q_CYCLES + 9'd4);
          end
          STEP_REPORT: begin
            $display("QUEUE run=%0d status=%h error=%0d cycles=%0d", run, status,
                     status[Q_ERROR_LSB +: Q_ERROR_W], {read_data, cycles_lo});
            run <= run + 1;
            if (run + 1 < runs && status[Q_ERROR_LSB +: Q_ERROR_W] == 0)
              step <= STEP_RUN;
          end
          default: begin
            dump <= 1'b1;
            state <= S_DUMP;
            phase <= "dumping the memory";
          end
        endcase
        if (step == STEP_HEAD && runs == 0) step <= STEP_DUMP;
      end
      S_WRITE: begin
        if (s_axil_awvalid && s_axil_awready) s_axil_awvalid <= 1'b0;
        if (s_axil_wvalid && s_axil_wready) s_axil_wvalid <= 1'b0;
        if (s_axil_bvalid && s_axil_bready) begin
          if (s_axil_bresp != OKAY)
            $fatal(1, "FAIL: tb_soc: write of %h to %h answered %b", s_axil_wdata,
                   s_axil_awaddr, s_axil_bresp);
          s_axil_bready <= 1'b0;
          state <= step == STEP_RUN + 1 ? S_IRQ_LOW : S_NEXT;
        end
      end
      S_READ: begin
        if (s_axil_arvalid && s_axil_arready) s_axil_arvalid <= 1'b0;
        if (s_axil_rvalid && s_axil_rready) begin
          if (s_axil_rresp != OKAY)
            $fatal(1, "FAIL: tb_soc: read of %h answered %b", s_axil_araddr, s_axil_rresp);
          s_axil_rready <= 1'b0;
          read_data <= s_axil_rdata;
          state <= S_NEXT;
        end
      end
      S_IRQ_LOW:                          // the run before's irq may still be high
        if (!irq) state <= S_IRQ_HIGH;
      S_IRQ_HIGH:
        if (irq) state <= S_NEXT;
      S_DUMP: begin                       // the RAM has written the dump at this edge
        dump <= 1'b0;
        state <= S_FINISH;
      end
      S_FINISH: begin
        $display("DONE runs=%0d cycles=%0d", run, cycle);
        $finish;
      end
      default: ;
    endcase
  end

  initial begin
    if (!$value$plusargs("head=%h", head))
      $fatal(1, "FAIL: tb_soc: no +head=<hex address of the first descriptor>");
    if (!$value$plusargs("runs=%d", runs)) runs = 1;
    if (!$value$plusargs("timeout=%d", timeout)) timeout = 10000000;
  end
endmodule
