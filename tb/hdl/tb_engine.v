// Self-checking Verilog-2005 testbench of the conv engine (top module `convcore`), for the
// FuseSoC target `sim` (convcore.core) on Icarus Verilog and Verilator (--binary, --timing).
//
// sim/fusesoc_gen.py (parameter testbench: true) writes the vectors from the golden model:
// tb_engine_params.vh (port widths, counts, STATUS fields, file names) and four $readmemh
// files. The bench loads the parameter stream, writes the layer's registers over AXI4-Lite
// (the last write pulses CTRL.start), waits for STATUS.running or done and checks that
// STATUS.error is NONE, sends the input stream while it collects the output stream (with a
// fixed back-pressure pattern), and compares every output word with the expected one: the
// kept bytes of tdata, tkeep and tlast. After tlast it waits for STATUS.busy to fall and
// checks STATUS.tlast_error and load_error. It prints one PASS line, or stops with $fatal
// (non-zero exit) at the first difference, naming the word, what came and what was expected.
//
// Plusarg +corrupt_word=N flips the low byte of expected word N (a check that the bench fails).
module tb_engine;
`include "tb_engine_params.vh"

  localparam REG_W = AXIL_ADDR_W + AXIL_DATA_W;
  localparam EXP_W = 1 + KEEP_W + OUT_W;

  reg clk = 1'b0;
  reg rst = 1'b1;
  always #5 clk = ~clk;

  reg  [REG_W-1:0]   regs_mem     [0:N_REGS-1];
  reg  [PARAM_W:0]   param_mem    [0:N_PARAM-1];
  reg  [IN_W:0]      input_mem    [0:N_INPUT-1];
  reg  [EXP_W-1:0]   expected_mem [0:N_OUTPUT-1];

  // AXI4-Lite
  reg  [AXIL_ADDR_W-1:0] s_axil_awaddr = 0;
  reg                    s_axil_awvalid = 1'b0;
  wire                   s_axil_awready;
  reg  [AXIL_DATA_W-1:0] s_axil_wdata = 0;
  reg                    s_axil_wvalid = 1'b0;
  wire                   s_axil_wready;
  wire [1:0]             s_axil_bresp;
  wire                   s_axil_bvalid;
  reg                    s_axil_bready = 1'b0;
  reg  [AXIL_ADDR_W-1:0] s_axil_araddr = 0;
  reg                    s_axil_arvalid = 1'b0;
  wire                   s_axil_arready;
  wire [AXIL_DATA_W-1:0] s_axil_rdata;
  wire [1:0]             s_axil_rresp;
  wire                   s_axil_rvalid;
  reg                    s_axil_rready = 1'b0;
  // Streams
  reg  [PARAM_W-1:0]     s_axis_param_tdata = 0;
  reg                    s_axis_param_tvalid = 1'b0;
  reg                    s_axis_param_tlast = 1'b0;
  wire                   s_axis_param_tready;
  reg  [IN_W-1:0]        s_axis_tdata = 0;
  reg                    s_axis_tvalid = 1'b0;
  reg                    s_axis_tlast = 1'b0;
  wire                   s_axis_tready;
  wire [OUT_W-1:0]       m_axis_tdata;
  wire [KEEP_W-1:0]      m_axis_tkeep;
  wire                   m_axis_tvalid;
  wire                   m_axis_tlast;
  reg                    m_axis_tready = 1'b0;
  wire                   s_axis_acc_tready;

  convcore dut (
    .clk(clk), .rst(rst),
    .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(3'b000), .s_axil_awvalid(s_axil_awvalid),
    .s_axil_awready(s_axil_awready),
    .s_axil_wdata(s_axil_wdata), .s_axil_wstrb({(AXIL_DATA_W/8){1'b1}}),
    .s_axil_wvalid(s_axil_wvalid), .s_axil_wready(s_axil_wready),
    .s_axil_bresp(s_axil_bresp), .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready),
    .s_axil_araddr(s_axil_araddr), .s_axil_arprot(3'b000), .s_axil_arvalid(s_axil_arvalid),
    .s_axil_arready(s_axil_arready),
    .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
    .s_axil_rready(s_axil_rready),
    .s_axis_param_tdata(s_axis_param_tdata), .s_axis_param_tvalid(s_axis_param_tvalid),
    .s_axis_param_tlast(s_axis_param_tlast), .s_axis_param_tready(s_axis_param_tready),
    .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid), .s_axis_tlast(s_axis_tlast),
    .s_axis_tready(s_axis_tready),
    .s_axis_acc_tdata({ACC_W{1'b0}}), .s_axis_acc_tvalid(1'b0), .s_axis_acc_tlast(1'b0),
    .s_axis_acc_tready(s_axis_acc_tready),
    .m_axis_tdata(m_axis_tdata), .m_axis_tkeep(m_axis_tkeep), .m_axis_tvalid(m_axis_tvalid),
    .m_axis_tlast(m_axis_tlast), .m_axis_tready(m_axis_tready)
  );

  // Cycle counter and watchdog; `phase` names what the bench waits for.
  integer cycle = 0;
  reg [8*40-1:0] phase = "reset";
  always @(posedge clk) begin
    cycle <= cycle + 1;
    if (cycle >= TIMEOUT_CYCLES)
      $fatal(1, "FAIL: tb_engine: timeout after %0d cycles while %0s (%0d of %0d output words)",
             cycle, phase, out_count, N_OUTPUT);
  end

  // Output sink: ready on three cycles of four (back-pressure), checks every word.
  integer out_count = 0;
  integer corrupt_word;
  reg output_done = 1'b0;
  reg [OUT_W-1:0] keep_mask;
  reg [EXP_W-1:0] want;
  integer b;
  always @(posedge clk) begin
    if (!rst) m_axis_tready <= (cycle % 4) != 3;
    if (!rst && m_axis_tvalid && m_axis_tready) begin
      if (output_done || out_count >= N_OUTPUT)
        $fatal(1, "FAIL: tb_engine: output word %0d: got %h (tkeep %h, tlast %0d), expected no more words (%0d)",
               out_count, m_axis_tdata, m_axis_tkeep, m_axis_tlast, N_OUTPUT);
      want = expected_mem[out_count];
      if (out_count == corrupt_word) want[7:0] = ~want[7:0];
      for (b = 0; b < KEEP_W; b = b + 1)
        keep_mask[8*b +: 8] = {8{m_axis_tkeep[b]}};
      if ((m_axis_tdata & keep_mask) !== want[OUT_W-1:0] || m_axis_tkeep !== want[OUT_W +: KEEP_W]
          || m_axis_tlast !== want[EXP_W-1])
        $fatal(1, "FAIL: tb_engine: output word %0d: got %h (tkeep %h, tlast %0d), expected %h (tkeep %h, tlast %0d)",
               out_count, m_axis_tdata & keep_mask, m_axis_tkeep, m_axis_tlast,
               want[OUT_W-1:0], want[OUT_W +: KEEP_W], want[EXP_W-1]);
      out_count <= out_count + 1;
      if (m_axis_tlast) output_done <= 1'b1;
    end
  end

  // Every process below is clocked (nonblocking assignments on the rising edge), so Icarus
  // and Verilator order them alike.

  // Parameter stream: from the end of the reset on, one beat per handshake.
  integer param_next = 0;
  always @(posedge clk) begin
    if (!rst && (!s_axis_param_tvalid || s_axis_param_tready)) begin
      if (param_next < N_PARAM) begin
        s_axis_param_tdata <= param_mem[param_next][PARAM_W-1:0];
        s_axis_param_tlast <= param_mem[param_next][PARAM_W];
        s_axis_param_tvalid <= 1'b1;
        param_next <= param_next + 1;
      end else begin
        s_axis_param_tvalid <= 1'b0;
      end
    end
  end
  wire params_sent = param_next == N_PARAM && !s_axis_param_tvalid;

  // Input stream: once the layer runs, a word per handshake, no word offered one cycle in five.
  reg streaming = 1'b0;
  integer in_next = 0;
  always @(posedge clk) begin
    if (streaming && (!s_axis_tvalid || s_axis_tready)) begin
      if (in_next < N_INPUT && cycle % 5 != 4) begin
        s_axis_tdata <= input_mem[in_next][IN_W-1:0];
        s_axis_tlast <= input_mem[in_next][IN_W];
        s_axis_tvalid <= 1'b1;
        in_next <= in_next + 1;
      end else begin
        s_axis_tvalid <= 1'b0;
      end
    end
  end

  // The host: load the parameters, write the registers (the last write pulses CTRL.start),
  // read STATUS until the layer runs, stream, read STATUS until the engine is idle.
  localparam S_RESET = 0, S_PARAMS = 1, S_WRITE = 2, S_WRITE_WAIT = 3, S_READ = 4,
             S_READ_WAIT = 5, S_STREAM = 6;
  integer state = S_RESET;
  integer reg_next = 0;
  reg draining = 1'b0;          // STATUS reads after the output (else: before the stream)
  reg [AXIL_DATA_W-1:0] status;
  always @(posedge clk) begin
    case (state)
      S_RESET:
        if (!rst) begin state <= S_PARAMS; phase <= "loading parameters"; end
      S_PARAMS:
        if (params_sent) begin state <= S_WRITE; phase <= "writing registers"; end
      S_WRITE: begin
        s_axil_awaddr <= regs_mem[reg_next][AXIL_DATA_W +: AXIL_ADDR_W];
        s_axil_wdata <= regs_mem[reg_next][AXIL_DATA_W-1:0];
        s_axil_awvalid <= 1'b1;
        s_axil_wvalid <= 1'b1;
        s_axil_bready <= 1'b1;
        state <= S_WRITE_WAIT;
      end
      S_WRITE_WAIT: begin
        if (s_axil_awvalid && s_axil_awready) s_axil_awvalid <= 1'b0;
        if (s_axil_wvalid && s_axil_wready) s_axil_wvalid <= 1'b0;
        if (s_axil_bvalid && s_axil_bready) begin
          if (s_axil_bresp != 2'b00)
            $fatal(1, "FAIL: tb_engine: write of %h to register %h answered %b",
                   s_axil_wdata, s_axil_awaddr, s_axil_bresp);
          s_axil_bready <= 1'b0;
          reg_next <= reg_next + 1;
          if (reg_next + 1 < N_REGS) begin
            state <= S_WRITE;
          end else begin
            state <= S_READ;
            phase <= "waiting for STATUS.running";
          end
        end
      end
      S_READ: begin
        s_axil_araddr <= STATUS_ADDR;
        s_axil_arvalid <= 1'b1;
        s_axil_rready <= 1'b1;
        state <= S_READ_WAIT;
      end
      S_READ_WAIT: begin
        if (s_axil_arvalid && s_axil_arready) s_axil_arvalid <= 1'b0;
        if (s_axil_rvalid && s_axil_rready) begin
          s_axil_rready <= 1'b0;
          status = s_axil_rdata;
          state <= S_READ;
          if (!draining && (status[STATUS_RUNNING] || status[STATUS_DONE])) begin
            if (status[STATUS_ERROR_LSB +: STATUS_ERROR_W] != 0)
              $fatal(1, "FAIL: tb_engine: the engine refused the layer: STATUS.error %0d",
                     status[STATUS_ERROR_LSB +: STATUS_ERROR_W]);
            state <= S_STREAM;
            streaming <= 1'b1;
            phase <= "streaming";
          end
          if (draining && !status[STATUS_BUSY]) begin
            if (status[STATUS_TLAST_ERROR] || status[STATUS_LOAD_ERROR])
              $fatal(1, "FAIL: tb_engine: STATUS %h: tlast_error %0d, load_error %0d", status,
                     status[STATUS_TLAST_ERROR], status[STATUS_LOAD_ERROR]);
            if (in_next != N_INPUT || s_axis_tvalid)
              $fatal(1, "FAIL: tb_engine: the engine is idle with %0d of %0d input words taken",
                     in_next - s_axis_tvalid, N_INPUT);
            $display("PASS: tb_engine: configuration %0s, %0d output words equal the golden model's (%0d input words, %0d parameter beats, %0d cycles)",
                     CONFIG, N_OUTPUT, N_INPUT, N_PARAM, cycle);
            $finish;
          end
        end
      end
      S_STREAM:
        if (output_done) begin
          state <= S_READ;
          draining <= 1'b1;
          phase <= "waiting for STATUS.busy to fall";
        end
      default: ;
    endcase
  end

  initial begin
    if (!$value$plusargs("corrupt_word=%d", corrupt_word)) corrupt_word = -1;
    $readmemh(FILE_REGS, regs_mem);
    $readmemh(FILE_PARAM, param_mem);
    $readmemh(FILE_INPUT, input_mem);
    $readmemh(FILE_EXPECTED, expected_mem);
    repeat (4) @(posedge clk);
    rst <= 1'b0;
  end
endmodule
